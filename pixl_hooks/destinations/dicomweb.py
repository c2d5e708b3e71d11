"""Destination `dicomweb`: STOW-RS to any DICOMweb server.

Works with Orthanc's DICOMweb plugin, dcm4chee, Google's or Azure's DICOM
services. Settings (secrets): `<alias>--dicomweb--url` (the DICOMweb root,
e.g. `https://host/dicom-web` or an Azure service's `https://<ws>-<svc>.dicom.azurehealthcareapis.com/v1`),
and either `<alias>--dicomweb--token` (sent as a bearer token) or
`<alias>--dicomweb--username` and `<alias>--dicomweb--password` (HTTP basic);
optionally `<alias>--dicomweb--ca-cert` (a PEM to trust).

Instances are stored in batches to `/studies/{pseudonymised study UID}`. An
export is confirmed only when every instance of the zip is listed in a
response's ReferencedSOPSequence, or is refused as a duplicate (failure reason
0x0111, or a whole request answered 409) and a QIDO-RS search shows it is
there: re-exporting what the server already holds is success. Instances the
server refused or left out (a 202 partial answer, or simply missing) are sent
again, only they, for a few rounds; what is still missing after that is a
retryable `DestinationIncomplete`.

The request body streams each instance from the zip on disk (never a whole
study, nor a whole batch, in memory) and is made afresh for every request, so
a repeated request never sends an exhausted body. dicomweb-client is used for
the QIDO-RS search only: its `store_instances` encodes a whole batch in memory
and its retry of a chunked upload resends an already consumed generator.
"""

from __future__ import annotations

import logging
import secrets as token_source
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from orthanc_plugins.common.http_session import idle_limited_session
from pixl_hooks.destinations._settings import (
    CA_CERT_FIELD,
    optional_setting,
    required_setting,
    secret_name,
    trusted_certificates,
)
from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import (
    DestinationIncomplete,
    DestinationInfo,
    DestinationMisconfigured,
    DestinationRejected,
    DestinationUnavailable,
    ExportReceipt,
    settings_problems,
)

logger = logging.getLogger(__name__)

NAME = "dicomweb"
SERVICE = "dicomweb"
INSTANCES_PER_REQUEST = 50
BYTES_PER_REQUEST = 256 * 1024 * 1024  # a request also ends at this size (instance bytes)
# Rounds of sending what is not confirmed yet, with a pause between, before giving up
# until the study's next attempt.
STORE_ROUNDS = 3
ROUND_PAUSE_SECONDS = 1.0
TIMEOUT_SECONDS = 120
# Statuses worth retrying later: the server is busy, restarting or behind a failing proxy.
_TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# STOW-RS answers that carry a store response dataset (PS3.18 10.5.3): all stored,
# some stored (Accepted), none stored (Conflict).
_STORE_RESPONSE_STATUSES = {200, 202, 409}
# Failure Reason of a FailedSOPSequence item: the server already holds the instance.
DUPLICATE_SOP_INSTANCE = 0x0111
_SOP_INSTANCE_UID = "00080018"


@dataclass(frozen=True)
class DicomwebSettings:
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ca_cert: str | None = field(default=None, repr=False)


def read_settings(secrets: Any, project: Any) -> DicomwebSettings:
    url = required_setting(secrets, project, SERVICE, "url").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise DestinationMisconfigured(
            f"project {project.slug}: secret {secret_name(project, SERVICE, 'url')!r} "
            "must be an http:// or https:// URL"
        )
    token = optional_setting(secrets, project, SERVICE, "token")
    username = optional_setting(secrets, project, SERVICE, "username")
    password = optional_setting(secrets, project, SERVICE, "password")
    if not token and not (username and password):
        raise DestinationMisconfigured(
            f"project {project.slug}: set secret {secret_name(project, SERVICE, 'token')!r}, "
            f"or {secret_name(project, SERVICE, 'username')!r} and "
            f"{secret_name(project, SERVICE, 'password')!r}"
        )
    return DicomwebSettings(
        url=url, username=username, password=password, token=token,
        ca_cert=optional_setting(secrets, project, SERVICE, CA_CERT_FIELD),
    )


@hookimpl
def pixl_destinations():
    return [DestinationInfo(NAME, dicom=True, parquet=False,
                            description="DICOMweb server (STOW-RS), basic or bearer-token auth")]


@hookimpl
def pixl_check_destination(project, destination_name, secrets):
    if destination_name != NAME:
        return None
    return settings_problems(read_settings, secrets, project)


@hookimpl
def pixl_export_dicom_study(project, destination_name, study, secrets):
    if destination_name != NAME:
        return None
    settings = read_settings(secrets, project)
    what = f"DICOMweb store of study {study.pseudo_study_uid} for project {project.slug}"
    instances = zip_instances(study.zip_path)
    with trusted_certificates(settings.ca_cert) as verify, closing(_session(settings, verify)) as session:
        store = _StudyStore(session, settings.url, study.zip_path, study.pseudo_study_uid, what)
        confirmed = store.store_all(instances)
    logger.info("stored %d instances of study %s of %s by STOW-RS (all confirmed)",
                len(confirmed), study.pseudo_study_uid, project.slug)
    return ExportReceipt(NAME, location=f"studies/{study.pseudo_study_uid}", files=len(confirmed))


@dataclass(frozen=True)
class ZipInstance:
    """One DICOM instance inside a study zip: its member name, size and SOP Instance UID."""

    member: str
    size: int
    sop_instance_uid: str


def zip_instances(zip_path: Path) -> list[ZipInstance]:
    """The instances of a study zip, read header by header (pixel data is not read)."""
    found = []
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            if info.is_dir() or info.filename.upper().endswith("DICOMDIR"):
                continue
            with archive.open(info) as member:
                header = pydicom.dcmread(cast(BinaryIO, member), stop_before_pixels=True,
                                         specific_tags=["SOPInstanceUID"])
            found.append(ZipInstance(info.filename, info.file_size, str(header.SOPInstanceUID)))
    return found


@dataclass
class StoreAnswer:
    """What one STOW-RS request achieved, by SOP Instance UID."""

    stored: set[str] = field(default_factory=set)
    duplicates: set[str] = field(default_factory=set)
    failure_reasons: Counter = field(default_factory=Counter)


class _StudyStore:
    """Sends a study's instances until each is confirmed, a few rounds at most."""

    def __init__(self, session: requests.Session, url: str, zip_path: Path, study_uid: str,
                 what: str):
        self.session = session
        self.url = url
        self.zip_path = zip_path
        self.study_uid = study_uid
        self.what = what

    def store_all(self, instances: list[ZipInstance]) -> set[str]:
        wanted = {instance.sop_instance_uid for instance in instances}
        confirmed: set[str] = set()
        reasons: Counter = Counter()
        transient: str | None = None
        for round_number in range(STORE_ROUNDS):
            if round_number:
                time.sleep(ROUND_PAUSE_SECONDS * round_number)
            pending = [i for i in instances if i.sop_instance_uid not in confirmed]
            duplicates: set[str] = set()
            reasons = Counter()
            transient = None
            for batch in _batches(pending):
                try:
                    answer = self.post(batch)
                except DestinationUnavailable as exc:
                    transient = str(exc)  # the server is struggling: the rest waits a round
                    break
                confirmed |= answer.stored & wanted
                duplicates |= answer.duplicates & wanted
                reasons += answer.failure_reasons
            if duplicates - confirmed:
                # "Already there" counts only once the server lists the instance.
                held = self.held_by_server() & duplicates
                confirmed |= held
                reasons[DUPLICATE_SOP_INSTANCE] += len(duplicates - confirmed)
            if confirmed >= wanted:
                return confirmed
            logger.warning("%s: round %d left %d of %d instances unconfirmed",
                           self.what, round_number + 1, len(wanted - confirmed), len(wanted))
        missing = len(wanted - confirmed)
        if transient and not reasons:
            raise DestinationUnavailable(transient)
        why = ", ".join(f"{count} refused with failure reason 0x{reason:04X}"
                        for reason, count in sorted(reasons.items())) or "not listed as stored"
        raise DestinationIncomplete(
            f"{self.what}: {missing} of {len(wanted)} instances not confirmed after "
            f"{STORE_ROUNDS} rounds ({why})"
        )

    def post(self, batch: list[ZipInstance]) -> StoreAnswer:
        """One STOW-RS request of `batch`, its body streamed from the zip."""
        body = MultipartBody(self.zip_path, [i.member for i in batch])
        try:
            response = self.session.post(
                f"{self.url}/studies/{self.study_uid}", data=body,
                headers={"Content-Type": body.content_type, "Accept": "application/dicom+json"},
            )
        except requests.exceptions.SSLError:
            raise DestinationMisconfigured(
                f"{self.what}: the server's certificate is not trusted (set secret "
                f"'<alias>--dicomweb--{CA_CERT_FIELD}' to its certificate or CA)"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DestinationUnavailable(
                f"{self.what}: server unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status in _STORE_RESPONSE_STATUSES:
            answer = _parse_store_response(response)
            if answer is not None:
                return answer
        if status == 409:  # a conflict without a response dataset: ask what is there
            return StoreAnswer(duplicates={i.sop_instance_uid for i in batch})
        if status in _TRANSIENT_STATUSES:
            raise DestinationUnavailable(f"{self.what}: temporary failure (HTTP {status})")
        if status in (401, 403):
            raise DestinationRejected(f"{self.what}: credentials refused (HTTP {status})")
        raise DestinationRejected(f"{self.what}: refused (HTTP {status})")

    def held_by_server(self) -> set[str]:
        """SOP Instance UIDs the server lists for the study (QIDO-RS)."""
        client = DICOMwebClient(url=self.url, session=self.session)
        client.set_http_retry_params(retry=False)
        try:
            found = client.search_for_instances(
                study_instance_uid=self.study_uid, fields=[_SOP_INSTANCE_UID],
                get_remaining=True,
            )
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return set()
            status = exc.response.status_code if exc.response is not None else 0
            raise DestinationUnavailable(f"{self.what}: search failed (HTTP {status})") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DestinationUnavailable(
                f"{self.what}: server unreachable ({type(exc).__name__})") from None
        return {str(item[_SOP_INSTANCE_UID]["Value"][0])
                for item in found if item.get(_SOP_INSTANCE_UID, {}).get("Value")}


def _parse_store_response(response: requests.Response) -> StoreAnswer | None:
    """The store response dataset (DICOM JSON), or None when there is none to read."""
    if "json" not in response.headers.get("Content-Type", "") or not response.content:
        return None
    try:
        dataset = pydicom.Dataset.from_json(response.content)
    except (ValueError, TypeError, KeyError):
        return None
    answer = StoreAnswer()
    for item in getattr(dataset, "ReferencedSOPSequence", []):
        if "ReferencedSOPInstanceUID" in item:
            answer.stored.add(str(item.ReferencedSOPInstanceUID))
    for item in getattr(dataset, "FailedSOPSequence", []):
        reason = int(item.get("FailureReason", 0) or 0)
        if reason == DUPLICATE_SOP_INSTANCE:
            answer.duplicates.add(str(item.get("ReferencedSOPInstanceUID", "")))
        else:
            answer.failure_reasons[reason] += 1
    return answer


def _batches(instances: list[ZipInstance]) -> Iterator[list[ZipInstance]]:
    batch: list[ZipInstance] = []
    size = 0
    for instance in instances:
        if batch and (len(batch) == INSTANCES_PER_REQUEST or size + instance.size > BYTES_PER_REQUEST):
            yield batch
            batch, size = [], 0
        batch.append(instance)
        size += instance.size
    if batch:
        yield batch


class MultipartBody:
    """A `multipart/related; type="application/dicom"` body read from the zip on disk.

    A file-like object with a length, so requests sends a Content-Length (not a
    chunked body, which some servers refuse) and reads it block by block. It is
    read once: every request makes a new one.
    """

    def __init__(self, zip_path: Path, members: list[str]):
        self.boundary = token_source.token_hex(16)
        self.content_type = f'multipart/related; type="application/dicom"; boundary={self.boundary}'
        self._zip_path = zip_path
        self._members = members
        with zipfile.ZipFile(zip_path) as archive:
            sizes = [archive.getinfo(name).file_size for name in members]
        self._length = sum(len(self._part_head()) + size + 2 for size in sizes) + len(self._tail())
        self._chunks = self._generate()
        self._pending = memoryview(b"")

    def _part_head(self) -> bytes:
        return f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def _generate(self) -> Iterator[bytes]:
        with zipfile.ZipFile(self._zip_path) as archive:
            for name in self._members:
                yield self._part_head()
                with archive.open(name) as member:
                    while chunk := member.read(64 * 1024):
                        yield chunk
                yield b"\r\n"
        yield self._tail()

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return bytes(self._pending) + b"".join(self._chunks)
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = memoryview(chunk)
        data, self._pending = self._pending[:size], self._pending[size:]
        return bytes(data)


class _TimeoutSession(requests.Session):
    """dicomweb-client sets no timeout; a stalled server must not hang a worker forever."""

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", TIMEOUT_SECONDS)
        return super().request(method, url, **kwargs)


def _session(settings: DicomwebSettings, verify: str | bool) -> _TimeoutSession:
    """A requests session carrying the destination's authentication."""
    session = idle_limited_session(_TimeoutSession())
    session.verify = verify
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    else:
        session.auth = (settings.username or "", settings.password or "")
    return session
