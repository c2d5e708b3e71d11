"""Destination `dicomweb`: STOW-RS to any DICOMweb server (dicomweb-client).

Works with Orthanc's DICOMweb plugin, dcm4chee, Google's or Azure's DICOM
services. Settings (secrets): `<alias>--dicomweb--url` (the DICOMweb root,
e.g. `https://host/dicom-web` or an Azure service's `https://<ws>-<svc>.dicom.azurehealthcareapis.com/v1`),
and either `<alias>--dicomweb--token` (sent as a bearer token) or
`<alias>--dicomweb--username` and `<alias>--dicomweb--password` (HTTP basic);
optionally `<alias>--dicomweb--ca-cert` (a PEM to trust).

Instances are stored in batches to `/studies/{pseudonymised study UID}`;
storing a study again is answered by the server as a repeat (same SOP
instance UIDs), not a duplicate.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from pixl_hooks.destinations._settings import (
    CA_CERT_FIELD,
    optional_setting,
    required_setting,
    secret_name,
    trusted_certificates,
)
from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import (
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
TIMEOUT_SECONDS = 120
# Statuses worth retrying later: the server is busy, restarting or behind a failing proxy.
_TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}


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
    stored = 0
    with trusted_certificates(settings.ca_cert) as verify, closing(_session(settings, verify)) as session:
        client = DICOMwebClient(url=settings.url, session=session)
        for batch in _batches(study.iter_instances(), INSTANCES_PER_REQUEST):
            answer = _store(client, batch, study.pseudo_study_uid, project.slug)
            failed = len(getattr(answer, "FailedSOPSequence", []))
            if failed:
                raise DestinationRejected(
                    f"DICOMweb store for project {project.slug} refused {failed} instances "
                    f"of study {study.pseudo_study_uid}"
                )
            stored += len(batch)
    logger.info("stored %d instances of study %s of %s by STOW-RS",
                stored, study.pseudo_study_uid, project.slug)
    return ExportReceipt(NAME, location=f"studies/{study.pseudo_study_uid}", files=stored)


class _TimeoutSession(requests.Session):
    """dicomweb-client sets no timeout; a stalled server must not hang a worker forever."""

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", TIMEOUT_SECONDS)
        return super().request(method, url, **kwargs)


def _session(settings: DicomwebSettings, verify: str | bool) -> _TimeoutSession:
    """A requests session carrying the destination's authentication."""
    session = _TimeoutSession()
    session.verify = verify
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    else:
        session.auth = (settings.username or "", settings.password or "")
    return session


def _batches(instances: Iterator[bytes], size: int) -> Iterator[list[pydicom.Dataset]]:
    batch: list[pydicom.Dataset] = []
    for data in instances:
        batch.append(pydicom.dcmread(io.BytesIO(data)))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _store(client: DICOMwebClient, batch: list[pydicom.Dataset], study_uid: str, slug: str):
    what = f"DICOMweb store of study {study_uid} for project {slug}"
    try:
        return client.store_instances(batch, study_instance_uid=study_uid)
    except requests.exceptions.SSLError:
        raise DestinationMisconfigured(
            f"{what}: the server's certificate is not trusted (set secret "
            f"'<alias>--dicomweb--{CA_CERT_FIELD}' to its certificate or CA)"
        ) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise DestinationUnavailable(f"{what}: server unreachable ({type(exc).__name__})") from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in _TRANSIENT_STATUSES:
            raise DestinationUnavailable(f"{what}: temporary failure (HTTP {status})") from None
        if status in (401, 403):
            raise DestinationRejected(f"{what}: credentials refused (HTTP {status})") from None
        raise DestinationRejected(f"{what}: refused (HTTP {status})") from None
