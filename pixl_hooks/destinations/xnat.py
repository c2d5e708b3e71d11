"""Destination `xnat`: import each study's DICOM zip into an XNAT project (the xnat package).

The XNAT project ID is the PIXL project slug; the subject is the
pseudonymised patient ID; the session (experiment) is the pseudonymised
study UID with its dots made underscores (XNAT labels allow letters, digits,
`_` and `-`). The project's `xnat_destination_options` choose where the data
goes (`/archive`, default, or `/prearchive` for review) and what happens to
an existing session (`overwrite`: `none`, default, refuses; `append`;
`delete` replaces clashing series).

Exporting a study again is success: with `overwrite: none` XNAT answers 409
for a session it already has, and the export then counts as done once the
archived session is found holding at least as many DICOM files as the zip
has instances (a crash between XNAT's answer and PIXL's record of it ends in
exactly this repeat). A session holding fewer is refused, left as it is, for
an operator to decide (`overwrite: append` completes it).

Settings (secrets, PIXL's names): `<alias>--xnat--host`, `--xnat--port`,
`--xnat--username`, `--xnat--password`; the server is `https://host:port`.
Its certificate must be trusted by the system's CAs or by the bundle named in
REQUESTS_CA_BUNDLE or SSL_CERT_FILE: `xnat.connect` reads only those (it
ignores a CA file passed as `verify`), so there is no `ca-cert` secret here.

The connection does not build xnat's data model from the server's schemas
(`no_parse_model`): the import service and a project lookup are all that is
needed, which keeps each export to a handful of requests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
import xnat
from xnat.exceptions import XNATError, XNATLoginFailedError, XNATResponseError, XNATSSLError

from pixl_hooks.destinations._settings import missing_settings, port_setting, required_setting
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
# xnat logs URLs and user names at INFO; keep its own logger quiet unless asked.
xnat_logger = logging.getLogger("pixl_hooks.destinations.xnat.client")
xnat_logger.setLevel(logging.WARNING)

NAME = "xnat"
SERVICE = "xnat"
REQUIRED_FIELDS = ("host", "port", "username", "password")
IMPORT_SERVICE = "/data/services/import"
DEFAULT_OVERWRITE = "none"
DEFAULT_DESTINATION = "/archive"
TIMEOUT_SECONDS = 300
_TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class XnatSettings:
    url: str
    username: str
    password: str = field(repr=False)


def read_settings(secrets: Any, project: Any) -> XnatSettings:
    host = required_setting(secrets, project, SERVICE, "host")
    port = port_setting(secrets, project, SERVICE)
    return XnatSettings(
        url=f"https://{host}:{port}",
        username=required_setting(secrets, project, SERVICE, "username"),
        password=required_setting(secrets, project, SERVICE, "password"),
    )


def xnat_label(value: str) -> str:
    """An XNAT label for a pseudonym: letters, digits, `_` and `-` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)


def import_options(project: Any) -> dict[str, str]:
    options = project.xnat_options
    return {
        "overwrite": options.overwrite if options else DEFAULT_OVERWRITE,
        "dest": options.destination if options else DEFAULT_DESTINATION,
    }


@hookimpl
def pixl_destinations():
    return [DestinationInfo(NAME, dicom=True, parquet=False,
                            description="XNAT import service (DICOM-zip) into the project")]


@hookimpl
def pixl_check_destination(project, destination_name, secrets):
    if destination_name != NAME:
        return None
    return missing_settings(secrets, project, SERVICE, REQUIRED_FIELDS) or settings_problems(
        read_settings, secrets, project
    )


@hookimpl
def pixl_export_dicom_study(project, destination_name, study, secrets):
    if destination_name != NAME:
        return None
    settings = read_settings(secrets, project)
    subject = xnat_label(study.pseudo_patient_id)
    experiment = xnat_label(study.pseudo_study_uid)
    query = {
        "import-handler": "DICOM-zip",
        "project": project.slug,
        "subject": subject,
        "session": experiment,
        **import_options(project),
    }
    what = f"XNAT import of study {study.pseudo_study_uid} for project {project.slug}"
    instances = len(study.instance_names())
    with _connected(settings, what) as session, _xnat_errors(what):
        _require_project(session, project.slug, what)
        try:
            with study.zip_path.open("rb") as handle:
                answer = session.upload_stream(
                    IMPORT_SERVICE, handle, query=query, content_type="application/zip",
                    method="post", timeout=TIMEOUT_SECONDS,
                )
            location = answer.text.strip() or f"{project.slug}/{subject}/{experiment}"
        except XNATError as exc:
            if not _is_existing_session(exc, query):
                raise
            location = _confirm_existing_session(
                session, project.slug, subject, experiment, instances, what)
            logger.info("study %s of %s was already in XNAT at %s", study.pseudo_study_uid,
                        project.slug, location)
            return ExportReceipt(NAME, location=location, files=instances)
    logger.info("imported study %s of %s into XNAT at %s", study.pseudo_study_uid, project.slug, location)
    return ExportReceipt(NAME, location=location, files=instances)


def _is_existing_session(exc: XNATError, query: dict[str, str]) -> bool:
    """XNAT's answer to importing, with `overwrite: none`, a session it already archived."""
    status = exc.status_code if isinstance(exc, XNATResponseError) else _status_in(str(exc))
    return status == 409 and query["overwrite"] == "none" and query["dest"] == DEFAULT_DESTINATION


def _confirm_existing_session(
    session: Any, project_id: str, subject: str, experiment: str, instances: int, what: str
) -> str:
    """The archived session's location if it holds the whole study, else DestinationRejected."""
    path = f"/data/projects/{project_id}/subjects/{subject}/experiments/{experiment}"
    listing = session.get_json(f"{path}/scans/ALL/files", query={"format": "json"},
                               accepted_status=[200])
    files = [entry for entry in _results(listing)
             if str(entry.get("collection", "DICOM")).upper() == "DICOM"]
    if len(files) < instances:
        raise DestinationRejected(
            f"{what}: XNAT already has session {experiment} holding {len(files)} of the "
            f"{instances} instances, and overwrite is 'none'; it is left as it is "
            "(overwrite 'append' would complete it)"
        )
    return f"/data/archive{path.removeprefix('/data')}"


def _results(listing: Any) -> list[dict]:
    if not isinstance(listing, dict):
        return []
    result = listing.get("ResultSet", {}).get("Result", [])
    return result if isinstance(result, list) else []


@contextmanager
def _connected(settings: XnatSettings, what: str) -> Iterator[Any]:
    with _xnat_errors(what):
        session = xnat.connect(
            server=settings.url, user=settings.username, password=settings.password,
            verify=True, no_parse_model=True, logger=xnat_logger,
            default_timeout=TIMEOUT_SECONDS,
        )
        try:
            yield session
        finally:
            _disconnect(session)


def _disconnect(session: Any) -> None:
    try:
        session.disconnect()
    except (XNATError, requests.RequestException):
        logger.warning("closing an XNAT session failed; it will expire on the server")


def _require_project(session: Any, project_id: str, what: str) -> None:
    try:
        session.get_json(f"/data/projects/{project_id}")
    except XNATResponseError as exc:
        if exc.status_code == 404:
            raise DestinationMisconfigured(f"{what}: XNAT has no project {project_id!r}") from None
        raise


@contextmanager
def _xnat_errors(what: str) -> Iterator[None]:
    """Translate xnat/requests errors; xnat's messages carry URLs, user names and server
    text, so they are replaced, and chaining is cut (`from None`)."""
    try:
        yield
    except (DestinationMisconfigured, DestinationRejected, DestinationUnavailable):
        raise
    except (XNATSSLError, requests.exceptions.SSLError):
        raise DestinationMisconfigured(
            f"{what}: the server's certificate is not trusted (add its CA to the system's, "
            "or name a CA bundle in REQUESTS_CA_BUNDLE)"
        ) from None
    except XNATLoginFailedError:
        raise DestinationRejected(f"{what}: login refused") from None
    except XNATResponseError as exc:
        if exc.status_code in _TRANSIENT_STATUSES:
            raise DestinationUnavailable(f"{what}: temporary failure (HTTP {exc.status_code})") from None
        raise DestinationRejected(f"{what}: refused (HTTP {exc.status_code})") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise DestinationUnavailable(f"{what}: server unreachable ({type(exc).__name__})") from None
    except XNATError as exc:
        # e.g. XNATUploadError after a non-2xx import answer, XNATConnectionError
        status = _status_in(str(exc))
        if status is None:
            raise DestinationUnavailable(f"{what}: failed ({type(exc).__name__})") from None
        if status in _TRANSIENT_STATUSES:
            raise DestinationUnavailable(f"{what}: temporary failure (HTTP {status})") from None
        raise DestinationRejected(f"{what}: refused (HTTP {status})") from None


def _status_in(message: str) -> int | None:
    match = re.search(r"[Ss]tatus code (\d{3})", message)
    return int(match.group(1)) if match else None
