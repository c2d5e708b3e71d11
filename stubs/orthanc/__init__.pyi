# Type stubs for the `orthanc` module of the Orthanc Python plugin 4.0
# (Debian bookworm: orthanc-python 4.0, Orthanc 1.10.1), for the calls PIXL
# makes. Checked against the running plugin (names, enum values, argument
# counts) and the plugin's own generated interface; where 4.0 differs from
# later releases, these stubs follow 4.0.
#
# Enumerations are classes of plain int constants in 4.0 (not enum.Enum),
# so their members compare and pass as int.

from typing import Any, Final, Protocol

# --- enumerations ------------------------------------------------------------------------

class ChangeType:
    COMPLETED_SERIES: Final = 0
    DELETED: Final = 1
    NEW_CHILD_INSTANCE: Final = 2
    NEW_INSTANCE: Final = 3
    NEW_PATIENT: Final = 4
    NEW_SERIES: Final = 5
    NEW_STUDY: Final = 6
    STABLE_PATIENT: Final = 7
    STABLE_SERIES: Final = 8
    STABLE_STUDY: Final = 9
    ORTHANC_STARTED: Final = 10
    ORTHANC_STOPPED: Final = 11
    UPDATED_ATTACHMENT: Final = 12
    UPDATED_METADATA: Final = 13
    UPDATED_PEERS: Final = 14
    UPDATED_MODALITIES: Final = 15
    JOB_SUBMITTED: Final = 16
    JOB_SUCCESS: Final = 17
    JOB_FAILURE: Final = 18

class ResourceType:
    PATIENT: Final = 0
    STUDY: Final = 1
    SERIES: Final = 2
    INSTANCE: Final = 3
    NONE: Final = 4

class ReceivedInstanceAction:
    KEEP_AS_IS: Final = 1
    MODIFY: Final = 2
    DISCARD: Final = 3

class InstanceOrigin:
    UNKNOWN: Final = 1
    DICOM_PROTOCOL: Final = 2
    REST_API: Final = 3
    PLUGIN: Final = 4
    LUA: Final = 5
    WEB_DAV: Final = 6

class HttpMethod:
    GET: Final = 1
    POST: Final = 2
    PUT: Final = 3
    DELETE: Final = 4

class MetricsType:
    DEFAULT: Final = 0
    TIMER: Final = 1

class DicomToJsonFormat:
    FULL: Final = 1
    SHORT: Final = 2
    HUMAN: Final = 3

class DicomToJsonFlags:
    NONE: Final = 0
    INCLUDE_BINARY: Final = 1
    INCLUDE_PRIVATE_TAGS: Final = 2
    INCLUDE_UNKNOWN_TAGS: Final = 4
    INCLUDE_PIXEL_DATA: Final = 8
    CONVERT_BINARY_TO_ASCII: Final = 16
    CONVERT_BINARY_TO_NULL: Final = 32
    STOP_AFTER_PIXEL_DATA: Final = 64
    SKIP_GROUP_LENGTHS: Final = 128

class ErrorCode:
    # The codes a plugin is likely to test for; plugin 4.0 defines about 120.
    INTERNAL_ERROR: Final = -1
    SUCCESS: Final = 0
    PLUGIN: Final = 1
    NOT_IMPLEMENTED: Final = 2
    PARAMETER_OUT_OF_RANGE: Final = 3
    BAD_PARAMETER_TYPE: Final = 5
    BAD_SEQUENCE_OF_CALLS: Final = 6
    INEXISTENT_ITEM: Final = 7
    BAD_REQUEST: Final = 8
    NETWORK_PROTOCOL: Final = 9
    DATABASE: Final = 11
    URI_SYNTAX: Final = 12
    INEXISTENT_FILE: Final = 13
    BAD_FILE_FORMAT: Final = 15
    TIMEOUT: Final = 16
    UNKNOWN_RESOURCE: Final = 17
    FULL_STORAGE: Final = 19
    INEXISTENT_TAG: Final = 21
    BAD_JSON: Final = 28
    UNAUTHORIZED: Final = 29
    DATABASE_UNAVAILABLE: Final = 36
    CANCELED_JOB: Final = 37
    UNKNOWN_MODALITY: Final = 2027

# --- exceptions and objects handed to callbacks -----------------------------------------

class OrthancException(Exception):
    """Raised by SDK calls that fail; `args` is (error code, description),
    e.g. (17, 'Unknown resource') for a GET of a missing resource."""

class RestOutput:
    """The answer channel of a REST callback."""

    def AnswerBuffer(self, answer: bytes | str, mime_type: str, /) -> None: ...
    def SendHttpStatusCode(self, status: int, /) -> None: ...
    # Plugin 4.0 takes the body as str plus its length in bytes (3 arguments);
    # a bytes body or a missing length raises TypeError.
    def SendHttpStatus(self, status: int, body: str, body_size: int, /) -> None: ...
    def SendMethodNotAllowed(self, allowed_methods: str, /) -> None: ...
    def SendUnauthorized(self, realm: str, /) -> None: ...
    def Redirect(self, redirection: str, /) -> None: ...
    def SetHttpHeader(self, key: str, value: str, /) -> None: ...
    def SetCookie(self, cookie: str, value: str, /) -> None: ...
    def SetHttpErrorDetails(self, details: str, log: int, /) -> None: ...
    def StartMultipartAnswer(self, sub_type: str, content_type: str, /) -> None: ...
    def SendMultipartItem(self, answer: bytes, /) -> None: ...

class DicomInstance:
    """A DICOM instance held by the Orthanc core (C-STORE filter, stored-instance callback)."""

    def GetInstanceRemoteAet(self) -> str: ...
    def GetInstanceSize(self) -> int: ...
    def GetInstanceData(self) -> bytes: ...
    def GetInstanceJson(self) -> str: ...
    def GetInstanceSimplifiedJson(self) -> str: ...
    def GetInstanceAdvancedJson(
        self, format: int, flags: int, max_string_length: int, /
    ) -> str: ...
    def HasInstanceMetadata(self, metadata: str, /) -> int: ...
    def GetInstanceMetadata(self, metadata: str, /) -> str: ...
    def GetInstanceOrigin(self) -> int: ...
    def GetInstanceTransferSyntaxUid(self) -> str: ...
    def HasInstancePixelData(self) -> int: ...
    def GetInstanceFramesCount(self) -> int: ...
    def GetInstanceRawFrame(self, frame_index: int, /) -> bytes: ...
    def SerializeDicomInstance(self) -> bytes: ...

# --- callback shapes ---------------------------------------------------------------------

class RestCallback(Protocol):
    # Called as callback(output, uri, **request); `request` holds method (str:
    # "GET", "POST", ...), groups (tuple[str, ...] of the regex groups),
    # headers (dict, lower-case names), get (dict, GET only) and body (bytes,
    # POST and PUT only). Write callbacks as `def cb(output, uri, **request)`;
    # the keywords are left out here because a protocol with `**request`
    # would reject every callback whose first parameters have names.
    def __call__(self, output: RestOutput, uri: str, /) -> None: ...

class OnChangeCallback(Protocol):
    def __call__(self, change_type: int, level: int, resource_id: str, /) -> None: ...

class ReceivedInstanceCallback(Protocol):
    # Return (ReceivedInstanceAction.KEEP_AS_IS, None), (DISCARD, None) or
    # (MODIFY, new DICOM bytes).
    def __call__(self, received_dicom: bytes, origin: int, /) -> tuple[int, bytes | None]: ...

class IncomingCStoreInstanceFilter(Protocol):
    # Return 1 to store the instance, 0 to discard it, -1 on error.
    def __call__(self, received_dicom: DicomInstance, /) -> int: ...

class IncomingHttpRequestFilter(Protocol):
    # Called as filter(uri, **request) before Orthanc handles an HTTP request;
    # `request` holds method (int, HttpMethod), ip (str), headers (dict,
    # lower-case names) and get (dict). Return True to let the request
    # through; False makes Orthanc answer 403 Forbidden.
    def __call__(self, uri: str, /) -> bool: ...

class OnStoredInstanceCallback(Protocol):
    def __call__(self, instance: DicomInstance, instance_id: str, /) -> None: ...

# --- registration ------------------------------------------------------------------------

def RegisterRestCallback(path_regular_expression: str, callback: RestCallback, /) -> None: ...
def RegisterOnChangeCallback(callback: OnChangeCallback, /) -> None: ...
def RegisterReceivedInstanceCallback(callback: ReceivedInstanceCallback, /) -> None: ...
def RegisterIncomingCStoreInstanceFilter(callback: IncomingCStoreInstanceFilter, /) -> None: ...
def RegisterOnStoredInstanceCallback(callback: OnStoredInstanceCallback, /) -> None: ...
def RegisterIncomingHttpRequestFilter(callback: IncomingHttpRequestFilter, /) -> None: ...

# --- the built-in REST API (in process; the plugin's lock is held during each call) -------

def RestApiGet(uri: str, /) -> bytes: ...
def RestApiGetAfterPlugins(uri: str, /) -> bytes: ...
def RestApiPost(uri: str, body: bytes | str, /) -> bytes: ...
def RestApiPostAfterPlugins(uri: str, body: bytes | str, /) -> bytes: ...
def RestApiPut(uri: str, body: bytes | str, /) -> bytes: ...
def RestApiPutAfterPlugins(uri: str, body: bytes | str, /) -> bytes: ...
def RestApiDelete(uri: str, /) -> None: ...
def RestApiDeleteAfterPlugins(uri: str, /) -> None: ...
def GenerateRestApiAuthorizationToken() -> str: ...

# --- configuration, logging and server facts ----------------------------------------------

def GetConfiguration() -> str: ...  # the whole configuration as a JSON string
def GetConfigurationPath() -> str: ...
def GetOrthancPath() -> str: ...
def GetOrthancDirectory() -> str: ...
def GetCommandLineArgumentsCount() -> int: ...
def GetCommandLineArgument(argument: int, /) -> str: ...
def LogInfo(message: str, /) -> None: ...
def LogWarning(message: str, /) -> None: ...
def LogError(message: str, /) -> None: ...
def SetDescription(description: str, /) -> None: ...
def SetRootUri(uri: str, /) -> None: ...
def ExtendOrthancExplorer(javascript: str, /) -> None: ...
def SetMetricsValue(name: str, value: float, type: int, /) -> None: ...
def GetGlobalProperty(property: int, default_value: str, /) -> str: ...
def SetGlobalProperty(property: int, value: str, /) -> None: ...
def GenerateUuid() -> str: ...

# --- DICOM helpers ------------------------------------------------------------------------

def GetDicomForInstance(instance_id: str, /) -> bytes: ...
def CreateDicomInstance(buffer: bytes, /) -> DicomInstance: ...
def DicomBufferToJson(buffer: bytes, format: int, flags: int, max_string_length: int, /) -> str: ...
def DicomInstanceToJson(
    instance_id: str, format: int, flags: int, max_string_length: int, /
) -> str: ...

# The Lookup* calls return an Orthanc ID; for an unknown value they raise OrthancException.
def LookupPatient(patient_id: str, /) -> str: ...
def LookupStudy(study_instance_uid: str, /) -> str: ...
def LookupStudyWithAccessionNumber(accession_number: str, /) -> str: ...
def LookupSeries(series_instance_uid: str, /) -> str: ...
def LookupInstance(sop_instance_uid: str, /) -> str: ...
