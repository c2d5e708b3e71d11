"""What both plugin entry modules share, in plain Python.

The entry modules are the only ones that import `orthanc`; they hand the module
(`sdk`) to these helpers, which therefore stay importable and testable without
Orthanc.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from orthanc_plugins.common import db
from orthanc_plugins.common.orthanc_api import OrthancError
from orthanc_plugins.common.settings import Settings, load_settings

logger = logging.getLogger(__name__)


def pixl_version() -> str:
    try:
        return version("pixl")
    except PackageNotFoundError:
        return "unknown"


def safe_traceback(exc: BaseException) -> str:
    """Where an exception happened, without its message.

    Messages of other libraries may quote the values they choke on (pydicom
    quotes an invalid date, which may be a birth date): logs get the exception's
    type and the stack's file, line and function names only.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in reversed(frames))
    return f"{type(exc).__name__} at {where}"


class OrthancLogHandler(logging.Handler):
    """Send Python logging to Orthanc's own log."""

    def __init__(self, sdk: Any):
        super().__init__()
        self._sdk = sdk

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self._sdk.LogError(message)
        elif record.levelno >= logging.WARNING:
            self._sdk.LogWarning(message)
        else:
            self._sdk.LogInfo(message)


def configure_logging(sdk: Any) -> None:
    handler = OrthancLogHandler(sdk)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # pydicom's warnings and messages quote the values they find invalid (an
    # odd birth date, a name): none of them may reach a log.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


class EmbeddedOrthanc:
    """`OrthancApi` over the plugin SDK's in-process REST calls."""

    def __init__(self, sdk: Any):
        self._sdk = sdk

    def _call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:  # the SDK raises its own exception type
            raise OrthancError(f"{what} failed: {exc}") from exc

    def get(self, uri: str) -> bytes:
        return self._call(f"GET {uri}", self._sdk.RestApiGet, uri)

    def post(self, uri: str, body: bytes) -> bytes:
        return self._call(f"POST {uri}", self._sdk.RestApiPost, uri, body)

    def put(self, uri: str, body: bytes) -> bytes:
        return self._call(f"PUT {uri}", self._sdk.RestApiPut, uri, body)

    def delete(self, uri: str) -> None:
        self._call(f"DELETE {uri}", self._sdk.RestApiDelete, uri)


@dataclass
class ApiRequest:
    method: str
    path: str  # below /pixl/, without a leading slash: "health", "extracts", ...
    query: dict[str, str]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc.msg}") from exc


@dataclass
class ApiResponse:
    status: int
    payload: Any
    content_type: str = "application/json"

    def body(self) -> bytes:
        if isinstance(self.payload, bytes):
            return self.payload
        return json.dumps(self.payload, default=str).encode()


class ApiError(Exception):
    """An error answer: its message is shown to the client, so it must never
    hold an identifying value or a secret."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[ApiRequest], ApiResponse]


QUERY_HEADER_PREFIX = "x-pixl-"


def _parse_query(request: dict[str, Any]) -> dict[str, str]:
    """The request's parameters: the query string, and `X-PIXL-<Name>` headers.

    Orthanc 1.10 passes the query string of GET requests only, so POST and PUT
    parameters travel as headers (`X-PIXL-Dry-Run: 1` is `dry_run=1`).
    """
    query = request.get("get") or {}
    if isinstance(query, dict):
        params = {str(k): str(v) for k, v in query.items()}
    else:
        params = {k: v[-1] for k, v in parse_qs(str(query)).items()}
    for name, value in (request.get("headers") or {}).items():
        name = str(name).lower()
        if name.startswith(QUERY_HEADER_PREFIX):
            params.setdefault(name[len(QUERY_HEADER_PREFIX):].replace("-", "_"), str(value))
    return params


def make_rest_callback(sdk: Any, handler: Handler) -> Callable[..., None]:
    """Adapt a plain `ApiRequest -> ApiResponse` handler to the SDK's REST callback."""

    def callback(output: Any, uri: str, **request: Any) -> None:
        groups = request.get("groups") or ()
        api_request = ApiRequest(
            method=request.get("method", "GET"),
            path=groups[0] if groups else uri,
            query=_parse_query(request),
            body=request.get("body") or b"",
            headers={str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()},
        )
        try:
            response = handler(api_request)
        except ApiError as exc:
            response = ApiResponse(exc.status, {"error": exc.message})
        except Exception as exc:
            # The client sees the type alone; the log gets where it happened.
            logger.error("unhandled error in %s /pixl/%s: %s", api_request.method,
                         api_request.path, safe_traceback(exc))
            response = ApiResponse(500, {"error": f"internal error ({type(exc).__name__}); see the server log"})
        _answer(output, response)

    return callback


def _answer(output: Any, response: ApiResponse) -> None:
    body = response.body()
    if 200 <= response.status < 300:
        output.AnswerBuffer(body, response.content_type)
    else:
        # Plugin 4.0 takes the body of an error answer as str (UTF-8 encoded by
        # the SDK) plus its length; our JSON is ASCII, so both lengths agree.
        output.SendHttpStatus(response.status, body.decode("ascii"), len(body))


def health(settings: Settings, service: str, *, workers: dict | None = None) -> dict[str, Any]:
    """The health answer: version, database, schema version, the workers and the disk.

    Unhealthy, with `problems` saying why, when the database cannot be
    reached, a worker thread died or made no progress for too long, or the
    disk of the state directory (Orthanc's storage, anon's staging) is nearly full.
    """
    answer: dict[str, Any] = {"service": service, "version": pixl_version()}
    problems = []
    try:
        with db.connect(settings) as conn:
            answer["schema_version"] = db.schema_version(conn)
        answer["database"] = "ok"
    except Exception as exc:
        answer["database"] = f"unreachable ({type(exc).__name__})"
        answer["schema_version"] = None
        problems.append(f"database {answer['database']}")
    if workers is not None:
        answer["workers"] = workers
        if workers["dead"]:
            problems.append(f"worker threads died: {', '.join(workers['dead'])}")
        if workers["stuck"]:
            problems.append(f"worker threads stuck: {', '.join(workers['stuck'])}")
    free_mb = _free_disk_mb(settings.state_dir)
    answer["disk_free_mb"] = free_mb
    if free_mb < settings.min_free_disk_mb:
        problems.append(f"disk nearly full: {free_mb} MB free, below {settings.min_free_disk_mb} MB")
    answer["problems"] = problems
    answer["healthy"] = not problems and bool(answer["schema_version"])
    return answer


def _free_disk_mb(path: Path) -> int:
    """Free space of the disk that holds `path` (or would, once it exists)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free // (1024 * 1024)


def migrate_with_retry(settings: Settings, attempts: int = 30, delay: float = 1.0) -> int:
    """Apply the schema migrations, waiting for the database to come up first."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with db.connect(settings) as conn:
                return db.migrate(conn)
        except Exception as exc:  # connection refused while PostgreSQL starts
            last = exc
            time.sleep(delay)
    raise RuntimeError(f"cannot migrate the PIXL database: {type(last).__name__}: {last}")


class PluginService(Protocol):
    def handle(self, request: ApiRequest) -> ApiResponse: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def explorer_extension() -> str:
    """The JavaScript of PIXL's panel in Orthanc Explorer (the web UI)."""
    return (resources.files("orthanc_plugins.common") / "explorer.js").read_text(encoding="utf-8")


def install(
    sdk: Any, make_service: Callable[[Settings, EmbeddedOrthanc], PluginService], node: str,
) -> PluginService:
    """Wire a plugin's service into Orthanc: logging, schema, access control, REST
    routes, lifecycle. `node` is "raw" or "anon" (which access rules apply)."""
    # access.py builds on this module's request types: imported here, not at the top.
    from orthanc_plugins.common import access
    from orthanc_plugins.common.secrets import check_secret_file, open_secret_store

    configure_logging(sdk)
    settings = load_settings()
    check_secret_file(settings)
    migrate_with_retry(settings)
    store = open_secret_store(settings)
    # raw audits; anon's data is de-identified (its access is decided, not recorded).
    audit = access.AuditWriter(settings) if node == "raw" else None
    access_filter = access.AccessFilter(node, access.Authenticator(store), audit)
    sdk.RegisterIncomingHttpRequestFilter(access_filter)
    sdk.RegisterRestCallback(access.LOGIN_PATH, access_filter.login)
    # The plugin calls the other server as the service user.
    settings = access.service_settings(settings, store)
    service = make_service(settings, EmbeddedOrthanc(sdk))

    def handle(request: ApiRequest) -> ApiResponse:
        if request.path == "audit" and audit is not None:
            return access.audit_api(settings, audit, request)
        return service.handle(request)

    sdk.RegisterRestCallback("/pixl/(.*)", make_rest_callback(sdk, handle))
    sdk.ExtendOrthancExplorer(access.LOGIN_SCRIPT + explorer_extension())
    if audit is not None:
        audit.start()

    def on_change(change_type: int, level: int, resource_id: str) -> None:
        if change_type == sdk.ChangeType.ORTHANC_STARTED:
            service.start()
        elif change_type == sdk.ChangeType.ORTHANC_STOPPED:
            service.stop()
            if audit is not None:
                audit.stop()  # writes what is still queued

    sdk.RegisterOnChangeCallback(on_change)
    return service
