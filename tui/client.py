"""The TUI's only door to the outside world: a small typed client of the raw
plugin's REST API (docs/rest-api.md).

Every call either returns a typed value or raises a `RawApiError` whose
message is one plain sentence an operator can act on, and whose `exit_code`
is what a script sees (tui/exit_codes.py).
"""

from __future__ import annotations

import io
import os
import socket
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from orthanc_plugins.common.http_session import idle_limited_session
from tui import exit_codes

REQUEST_TIMEOUT_SECONDS = 15
UPLOAD_TIMEOUT_SECONDS = 300
OMOP_SUMMARY_FILE = "extract_summary.json"
T = TypeVar("T")

# Where a study's journey ends; everything else is still on its way.
END_STATES = ("exported", "not_found", "failed", "skipped")
PROBLEM_STATES = ("not_found", "failed")
ALL_STATES = (
    "queued",
    "querying",
    "retrieving",
    "cached",
    "anonymising",
    "exporting",
    "exported",
    "not_found",
    "failed",
    "skipped",
)


class RawApiError(Exception):
    """A call to the raw plugin did not do what was asked; the message says why."""

    exit_code = exit_codes.ERROR


class Unreachable(RawApiError):
    exit_code = exit_codes.UNREACHABLE


class AuthRefused(RawApiError):
    exit_code = exit_codes.AUTH_REFUSED


class InvalidInput(RawApiError):
    exit_code = exit_codes.INVALID_INPUT


class ServerError(RawApiError):
    exit_code = exit_codes.SERVER_ERROR


class InsecureTransport(RawApiError):
    exit_code = exit_codes.INVALID_INPUT


PLAIN_HTTP_VARIABLE = "PIXL_TUI_PLAIN_HTTP_LOOPBACK"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ClientConfig:
    url: str
    username: str
    password: str
    # The CA bundle raw's certificate must be signed by (None: the system's CAs).
    ca_bundle: str | None = None
    # Plain HTTP is refused unless the operator says raw runs on this machine.
    plain_http_loopback: bool = False


def check_transport(config: ClientConfig) -> None:
    """Refuse to send credentials over plain HTTP, except to this machine when told to."""
    parsed = urlsplit(config.url)
    if parsed.scheme == "https":
        return
    if parsed.scheme != "http":
        raise InsecureTransport(f"the raw URL {config.url} must start with https://")
    if not config.plain_http_loopback:
        raise InsecureTransport(
            f"refusing plain HTTP to {config.url}: the password and every answer would cross "
            f"the network in clear; use https://, or set {PLAIN_HTTP_VARIABLE}=1 "
            "(or --plain-http-loopback) when raw runs on this machine"
        )
    if parsed.hostname not in LOOPBACK_HOSTS:
        raise InsecureTransport(
            f"refusing plain HTTP to {config.url}: {PLAIN_HTTP_VARIABLE} allows loopback addresses only"
        )


def config_from_environment() -> ClientConfig:
    """PIXL_RAW_URL if set, else raw's URL from the PIXL settings; credentials from
    ORTHANC_USERNAME / ORTHANC_PASSWORD (read by the settings module)."""
    from orthanc_plugins.common.settings import load_env_file, load_settings

    load_env_file()  # the repository's .env, where the operator runs from a checkout
    settings = load_settings()
    url = os.environ.get("PIXL_RAW_URL") or settings.raw.url
    return ClientConfig(
        url.rstrip("/"), settings.orthanc_username, settings.orthanc_password,
        ca_bundle=str(settings.tls_ca_bundle) if settings.tls_ca_bundle else None,
        plain_http_loopback=os.environ.get(PLAIN_HTTP_VARIABLE, "") == "1",
    )


@dataclass(frozen=True)
class Health:
    service: str
    version: str
    database: str
    schema_version: int | None
    healthy: bool


@dataclass(frozen=True)
class PipelineStatus:
    """What holds the pipeline back (`GET /pixl/pipeline`)."""

    waiting_for_anon: int
    exporting: int
    raw_cache_used_mb: float | None
    raw_cache_max_mb: int | None
    held_for_anon_mb: float
    hold_limit_mb: int | None
    anon_instances_per_second: float
    problems: list[str]


@dataclass(frozen=True)
class LoadSummary:
    project: str
    extract: str
    studies: int
    queued: int
    already_exported: int
    modalities: list[str]
    destination: dict[str, str]
    dry_run: bool
    destination_problems: list[str] = field(default_factory=list)
    studies_in_extract: int | None = None  # before --limit
    limit: int | None = None
    practice: bool = False
    priority: int = 1
    loaded_before: bool = False  # the extract was loaded before: its studies are queued already

    def nothing_added(self) -> str | None:
        """Why a load queued nothing, in plain words; None if it queued something."""
        if self.queued:
            return None
        if self.loaded_before:
            return (f"nothing to queue: this extract was loaded before "
                    f"(its {self.studies} studies are queued already or have ended)")
        if self.already_exported and self.already_exported == self.studies:
            return f"nothing to queue: all {self.already_exported} studies were exported before"
        return "nothing to queue"


@dataclass(frozen=True)
class ExtractStatus:
    project: str
    extract: str
    loaded_at: str | None
    total: int
    counts: dict[str, int]
    throughput_per_minute: float | None
    eta_seconds: float | None
    last_error: str | None
    last_error_at: str | None
    priority: int = 1
    practice: bool = False
    cancelled_at: str | None = None

    @property
    def key(self) -> str:
        return f"{self.project}/{self.extract}"

    @property
    def finished(self) -> int:
        return sum(self.counts.get(state, 0) for state in END_STATES)

    @property
    def problems(self) -> int:
        return sum(self.counts.get(state, 0) for state in PROBLEM_STATES)

    @property
    def active(self) -> int:
        return self.total - self.finished - self.counts.get("queued", 0)

    @property
    def done(self) -> bool:
        return self.total > 0 and self.finished >= self.total

    @property
    def progress(self) -> float:
        return self.finished / self.total if self.total else 0.0


@dataclass(frozen=True)
class Failure:
    job_id: int
    project: str
    extract: str
    state: str
    attempts: int
    last_error: str | None
    updated_at: str | None


@dataclass(frozen=True)
class EffectiveLimits:
    """What applies now: the controls, or the schedule's window, and until when."""

    max_in_flight: int
    studies_per_second: float
    paused: bool
    window: str | None
    next_change_at: str | None
    time_zone: str | None


@dataclass(frozen=True)
class Controls:
    max_in_flight: int
    studies_per_second: float
    paused: bool
    in_flight: int


@dataclass(frozen=True)
class ScheduleWindow:
    days: list[str]
    start: str
    end: str
    max_in_flight: int | None
    studies_per_second: float | None


@dataclass(frozen=True)
class Schedule:
    time_zone: str | None  # None: no schedule stored
    windows: list[ScheduleWindow]
    effective: EffectiveLimits


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    modality: str
    seconds: float
    error: str | None


@dataclass(frozen=True)
class ArchiveStudy:
    """One study the archive holds (no identifier: the query's values stay with the operator)."""

    study_date: str | None
    modalities: list[str]
    series: int | None
    instances: int | None
    cached: str  # complete | partial | no


@dataclass(frozen=True)
class CancelResult:
    project: str
    extract: str
    withdrawn: int
    in_flight: int
    exported: int


@dataclass(frozen=True)
class Export:
    export_id: int
    project: str
    extract: str
    state: str
    started_at: str | None
    finished_at: str | None
    export_dir: str | None
    destination: str | None
    uploaded_to: str | None
    error: str | None


@dataclass(frozen=True)
class Destination:
    name: str
    module: str
    hooks: list[str]


@dataclass(frozen=True)
class Plugin:
    name: str
    module: str
    hooks: list[str]
    destinations: list[str]


@dataclass(frozen=True)
class HookError:
    """A lifecycle hook that raised (GET /pixl/plugins); `job_id` is None for an extract's."""

    hook: str
    plugin: str
    project: str
    extract: str
    job_id: int | None
    error: str
    recorded_at: str

    def sentence(self) -> str:
        """What failed, where and why, as `pixl-tui plugins` and the Plugins screen say it."""
        job = f" job {self.job_id}" if self.job_id is not None else ""
        return f"{self.hook} of {self.plugin}: {self.project}/{self.extract}{job}: {self.error}"


@dataclass(frozen=True)
class PluginListing:
    plugins: list[Plugin]
    hook_errors: list[HookError]


@dataclass(frozen=True)
class ExtractUpload:
    """An extract ready to send: the body and how to describe it to the server."""

    source: Path
    body: bytes
    content_type: str
    filename: str


def prepare_upload(path: Path) -> ExtractUpload:
    """Turn what the operator pointed at into a request body: a CSV cohort as it is,
    an OMOP ES extract folder (or its extract_summary.json) zipped in memory."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InvalidInput(f"no such file or folder: {path}")
    if path.is_file() and path.name == OMOP_SUMMARY_FILE:
        path = path.parent
    if path.is_dir():
        if not (path / OMOP_SUMMARY_FILE).is_file():
            raise InvalidInput(
                f"{path} is a folder without {OMOP_SUMMARY_FILE}: not an OMOP ES extract"
            )
        return ExtractUpload(path, _zip_folder(path), "application/zip", f"{path.name}.zip")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ExtractUpload(path, path.read_bytes(), "text/csv", path.name)
    if suffix == ".zip":
        return ExtractUpload(path, path.read_bytes(), "application/zip", path.name)
    raise InvalidInput(f"{path} is neither a CSV cohort (.csv) nor an OMOP ES extract folder")


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
    return buffer.getvalue()


class RawClient:
    """Typed calls of docs/rest-api.md over one HTTP session."""

    def __init__(self, config: ClientConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self._session = idle_limited_session(session)
        self._session.auth = (config.username, config.password)
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a
        # session's `verify` (psf/requests#3829).
        self._verify: str | bool = config.ca_bundle or True

    @property
    def url(self) -> str:
        return self.config.url

    def close(self) -> None:
        self._session.close()

    def health(self) -> Health:
        return self._call("GET", "/pixl/health", _health)

    def load_extract(
        self,
        upload: ExtractUpload,
        *,
        dry_run: bool,
        limit: int | None = None,
        practice: bool = False,
        priority: int | None = None,
    ) -> LoadSummary:
        # Orthanc 1.10 drops the query string of POST requests: parameters are headers.
        headers = {"Content-Type": upload.content_type}
        if upload.content_type == "text/csv":
            headers["X-PIXL-Filename"] = upload.filename
        if dry_run:
            headers["X-PIXL-Dry-Run"] = "1"
        if limit is not None:
            headers["X-PIXL-Limit"] = str(limit)
        if practice:
            headers["X-PIXL-Practice"] = "1"
        if priority is not None:
            headers["X-PIXL-Priority"] = str(priority)
        return self._call(
            "POST",
            "/pixl/extracts",
            _load_summary,
            data=upload.body,
            headers=headers,
            timeout=UPLOAD_TIMEOUT_SECONDS,
        )

    def extracts(self) -> list[ExtractStatus]:
        return self._call("GET", "/pixl/extracts", _extracts)

    def audit(self, **filters: str | None) -> list[AuditEntry]:
        """The access audit, newest first (admins only). Filters: user, action (a part
        of it), since / until (ISO times), allowed ("yes" / "no"), limit."""
        params = {name: value for name, value in filters.items() if value}
        return self._call("GET", "/pixl/audit", _audit_entries, params=params)

    def failures(self, project: str | None = None, extract: str | None = None) -> list[Failure]:
        params = {k: v for k, v in (("project", project), ("extract", extract)) if v}
        return self._call("GET", "/pixl/failures", _failures, params=params)

    def retry(
        self,
        job_ids: list[int] | None = None,
        *,
        project: str | None = None,
        extract: str | None = None,
    ) -> int:
        """Retry the given jobs, or every failure (of a project / extract) if none given."""
        body: dict[str, Any]
        if job_ids:
            body = {"job_ids": list(job_ids)}
        else:
            body = {"all": True}
            if project:
                body["project"] = project
            if extract:
                body["extract"] = extract
        return self._call(
            "POST", "/pixl/failures/retry", lambda data: int(data["retried"]), json=body
        )

    def controls(self) -> Controls:
        return self._call("GET", "/pixl/controls", _controls)

    def set_controls(
        self,
        *,
        max_in_flight: int | None = None,
        studies_per_second: float | None = None,
        paused: bool | None = None,
    ) -> Controls:
        body: dict[str, Any] = {}
        if max_in_flight is not None:
            body["max_in_flight"] = max_in_flight
        if studies_per_second is not None:
            body["studies_per_second"] = studies_per_second
        if paused is not None:
            body["paused"] = paused
        return self._call("PUT", "/pixl/controls", _controls, json=body)

    def start_export(self, project: str, extract: str) -> Export:
        return self._call(
            "POST", "/pixl/exports", _export, json={"project": project, "extract": extract}
        )

    def exports(self, project: str | None = None, extract: str | None = None) -> list[Export]:
        params = {k: v for k, v in (("project", project), ("extract", extract)) if v}
        return self._call(
            "GET",
            "/pixl/exports",
            lambda data: [_export(item) for item in data["exports"]],
            params=params,
        )

    def pipeline(self) -> PipelineStatus:
        return self._call("GET", "/pixl/pipeline", _pipeline)

    def destinations(self) -> list[Destination]:
        return self._call("GET", "/pixl/destinations", _destinations)

    def plugins(self) -> PluginListing:
        return self._call("GET", "/pixl/plugins", _plugins)

    def schedule(self) -> Schedule:
        return self._call("GET", "/pixl/controls/schedule", _schedule)

    def set_schedule(self, time_zone: str, windows: list[dict[str, Any]]) -> Schedule:
        body = {"time_zone": time_zone, "windows": windows}
        return self._call("PUT", "/pixl/controls/schedule", _schedule, json=body)

    def clear_schedule(self) -> Schedule:
        return self._call("DELETE", "/pixl/controls/schedule", _schedule)

    def set_priority(self, project: str, extract: str, priority: int) -> int:
        body = {"project": project, "extract": extract, "priority": priority}
        return self._call("PUT", "/pixl/extracts/priority", lambda d: int(d["priority"]), json=body)

    def cancel(self, project: str, extract: str) -> CancelResult:
        return self._call(
            "POST", "/pixl/extracts/cancel", _cancel, json={"project": project, "extract": extract}
        )

    def report(self, project: str, extract: str) -> dict[str, Any]:
        """The extract's report as JSON (docs/rest-api.md)."""
        params = {"project": project, "extract": extract}
        return self._call("GET", "/pixl/extracts/report", dict, params=params)

    def report_html(self, project: str, extract: str) -> str:
        params = {"project": project, "extract": extract, "format": "html"}
        return self._text("GET", "/pixl/extracts/report", params=params)

    def vna_echo(self) -> EchoResult:
        return self._call("POST", "/pixl/vna/echo", _echo, json={})

    def vna_find(self, **criteria: str | None) -> list[ArchiveStudy]:
        """C-FIND through raw; the criteria go in the body, never in a URL or a log."""
        body = {k: v for k, v in criteria.items() if v}
        return self._call("POST", "/pixl/vna/find", _archive_studies, json=body)

    def _text(self, method: str, path: str, **kwargs: Any) -> str:
        """A call answering a text document (HTML), with the usual errors."""
        response = self._send(method, path, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        self._raise_for_error(response, method, path)
        return response.text

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[dict[str, Any]], T],
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> T:
        """One request, its answer parsed by `parse`; an answer that does not follow
        docs/rest-api.md becomes a ServerError naming what was missing."""
        payload = self._request(method, path, timeout=timeout, **kwargs)
        try:
            return parse(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(
                f"{method} {path} answered outside docs/rest-api.md ({type(exc).__name__}: {exc})"
            ) from None

    def _send(self, method: str, path: str, *, timeout: float, **kwargs: Any) -> requests.Response:
        url = self.config.url + path
        try:
            return self._session.request(method, url, timeout=timeout, verify=self._verify, **kwargs)
        except requests.Timeout:
            raise Unreachable(
                f"the raw plugin at {self.config.url} did not answer within {timeout:g} s"
            ) from None
        except requests.RequestException as exc:
            raise Unreachable(
                f"cannot reach the raw plugin at {self.config.url}: {_reason(exc)}"
            ) from None

    def _request(self, method: str, path: str, *, timeout: float, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, timeout=timeout, **kwargs)
        payload = self._raise_for_error(response, method, path)
        if not isinstance(payload, dict):
            raise ServerError(f"{method} {path} answered something that is not a JSON object")
        return payload

    def _raise_for_error(self, response: requests.Response, method: str, path: str) -> Any:
        """The answer's JSON (or None); an error status raised as the right RawApiError."""
        if response.status_code in (401, 403):
            raise AuthRefused(
                f"the raw plugin at {self.config.url} refused the credentials of user "
                f"{self.config.username!r} (HTTP {response.status_code}); "
                "check ORTHANC_USERNAME and ORTHANC_PASSWORD"
            )
        payload = _json_or_none(response)
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            if not message and response.status_code == 404:
                # No JSON error: the route itself is missing, so this is not PIXL's raw.
                raise Unreachable(
                    f"{self.config.url} answered HTTP 404 for {path}: "
                    "is the PIXL raw plugin running at this URL?"
                )
            message = message or f"HTTP {response.status_code} from {method} {path}"
            raise (ServerError if response.status_code >= 500 else InvalidInput)(message)
        return payload


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reason(exc: requests.RequestException) -> str:
    """The innermost cause in a few words ("connection refused"), not urllib3's novel."""
    if isinstance(exc, requests.exceptions.SSLError):
        return ("its TLS certificate is not signed by a trusted CA (set PIXL_TLS_CA_BUNDLE "
                "or --ca-bundle to the CA of raw's certificate)")
    cause = _innermost_os_error(exc)
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (is the stack running?)"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror})"
    if cause is not None and cause.strerror:
        return cause.strerror.lower()
    return type(exc).__name__


def _innermost_os_error(exc: BaseException) -> OSError | None:
    # requests wraps urllib3's MaxRetryError, whose `reason` wraps the socket error.
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return None


def _health(data: dict[str, Any]) -> Health:
    return Health(
        service=data.get("service", ""),
        version=data.get("version", ""),
        database=data.get("database", ""),
        schema_version=data.get("schema_version"),
        healthy=bool(data.get("healthy")),
    )


def _pipeline(data: dict[str, Any]) -> PipelineStatus:
    cache = data["raw_cache"]
    return PipelineStatus(
        waiting_for_anon=int(data["waiting_for_anon"]),
        exporting=int(data["exporting"]),
        raw_cache_used_mb=cache["used_mb"],
        raw_cache_max_mb=cache["max_mb"],
        held_for_anon_mb=float(cache["held_for_anon_mb"]),
        hold_limit_mb=cache["hold_limit_mb"],
        anon_instances_per_second=float(data["anon_instances_per_second"]),
        problems=[str(problem) for problem in data["problems"]],
    )


def _load_summary(data: dict[str, Any]) -> LoadSummary:
    return LoadSummary(
        project=data["project"],
        extract=data["extract"],
        studies=int(data["studies"]),
        queued=int(data["queued"]),
        already_exported=int(data.get("already_exported", 0)),
        modalities=list(data.get("modalities") or []),
        destination=dict(data.get("destination") or {}),
        dry_run=bool(data["dry_run"]),
        destination_problems=list(data.get("destination_problems") or []),
        studies_in_extract=data.get("studies_in_extract"),
        limit=data.get("limit"),
        practice=bool(data.get("practice", False)),
        priority=int(data.get("priority", 1)),
        loaded_before=bool(data.get("loaded_before", False)),
    )


def _extracts(data: dict[str, Any]) -> list[ExtractStatus]:
    return [
        ExtractStatus(
            project=item["project"],
            extract=item["extract"],
            loaded_at=item.get("loaded_at"),
            total=int(item.get("total", 0)),
            counts={k: int(v) for k, v in (item.get("counts") or {}).items()},
            throughput_per_minute=item.get("throughput_per_minute"),
            eta_seconds=item.get("eta_seconds"),
            last_error=item.get("last_error"),
            last_error_at=item.get("last_error_at"),
            priority=int(item.get("priority", 1)),
            practice=bool(item.get("practice", False)),
            cancelled_at=item.get("cancelled_at"),
        )
        for item in data["extracts"]
    ]


@dataclass(frozen=True)
class AuditEntry:
    at: str
    node: str
    user: str
    role: str
    action: str
    resource: str
    allowed: bool


def _audit_entries(data: dict[str, Any]) -> list[AuditEntry]:
    return [
        AuditEntry(str(item["at"]), item["node"], item["user"], item["role"], item["action"],
                   item["resource"], bool(item["allowed"]))
        for item in data["records"]
    ]


def _failures(data: dict[str, Any]) -> list[Failure]:
    return [
        Failure(
            job_id=int(item["job_id"]),
            project=item["project"],
            extract=item["extract"],
            state=item["state"],
            attempts=int(item.get("attempts", 0)),
            last_error=item.get("last_error"),
            updated_at=item.get("updated_at"),
        )
        for item in data["failures"]
    ]


def _destinations(data: dict[str, Any]) -> list[Destination]:
    return [
        Destination(item["name"], item.get("module", ""), list(item.get("hooks") or []))
        for item in data["destinations"]
    ]


def _plugins(data: dict[str, Any]) -> PluginListing:
    return PluginListing(
        plugins=[
            Plugin(item["name"], item.get("module", ""), list(item.get("hooks") or []),
                   list(item.get("destinations") or []))
            for item in data["plugins"]
        ],
        hook_errors=[
            HookError(item["hook"], item["plugin"], item["project"], item["extract"],
                      item.get("job_id"), item.get("error") or "", item.get("recorded_at") or "")
            for item in data.get("hook_errors") or []
        ],
    )


def _controls(data: dict[str, Any]) -> Controls:
    return Controls(
        max_in_flight=int(data["max_in_flight"]),
        studies_per_second=float(data["studies_per_second"]),
        paused=bool(data["paused"]),
        in_flight=int(data.get("in_flight", 0)),
    )


def _effective(data: dict[str, Any]) -> EffectiveLimits:
    return EffectiveLimits(
        max_in_flight=int(data["max_in_flight"]),
        studies_per_second=float(data["studies_per_second"]),
        paused=bool(data["paused"]),
        window=data.get("window"),
        next_change_at=data.get("next_change_at"),
        time_zone=data.get("time_zone"),
    )


def _schedule(data: dict[str, Any]) -> Schedule:
    stored = data.get("schedule") or {}
    windows = [
        ScheduleWindow(
            days=list(w["days"]),
            start=w["start"],
            end=w["end"],
            max_in_flight=w.get("max_in_flight"),
            studies_per_second=w.get("studies_per_second"),
        )
        for w in stored.get("windows", [])
    ]
    return Schedule(stored.get("time_zone"), windows, _effective(data["effective"]))


def _cancel(data: dict[str, Any]) -> CancelResult:
    return CancelResult(
        project=data["project"],
        extract=data["extract"],
        withdrawn=int(data["withdrawn"]),
        in_flight=int(data["in_flight"]),
        exported=int(data["exported"]),
    )


def _echo(data: dict[str, Any]) -> EchoResult:
    return EchoResult(
        ok=bool(data["ok"]),
        modality=data.get("modality", ""),
        seconds=float(data.get("seconds", 0)),
        error=data.get("error"),
    )


def _archive_studies(data: dict[str, Any]) -> list[ArchiveStudy]:
    return [
        ArchiveStudy(
            study_date=item.get("study_date"),
            modalities=list(item.get("modalities") or []),
            series=item.get("series"),
            instances=item.get("instances"),
            cached=item["cached"],
        )
        for item in data["studies"]
    ]


def _export(data: dict[str, Any]) -> Export:
    return Export(
        export_id=int(data["export_id"]),
        project=data.get("project", ""),
        extract=data.get("extract", ""),
        state=data["state"],
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        export_dir=data.get("export_dir"),
        destination=data.get("destination"),
        uploaded_to=data.get("uploaded_to"),
        error=data.get("error"),
    )
