"""PIXL settings, read from the environment.

Every process of PIXL (the stack command, both Orthanc plugins, the TUI, the
tests) takes its configuration from environment variables, so that one `.env`
file (or the compose file's `env_file`) configures everything. The names and
defaults are documented in `.env.example`; this module is their one reader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Orthanc's own HTTP port, behind the TLS front, is the public port plus this.
INTERNAL_HTTP_PORT_OFFSET = 400


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from exc


def _env_flag(name: str, default: bool) -> bool:
    raw = _env(name, "1" if default else "0").lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"environment variable {name} must be 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes")


def _env_path(name: str, default: Path) -> Path | None:
    """A path; the value "none" turns it off (the system's CAs for a CA bundle)."""
    raw = _env(name, str(default))
    return None if raw.lower() == "none" else Path(raw)


@dataclass(frozen=True)
class OrthancNode:
    """One Orthanc server of the stack: where it listens and who it is."""

    name: str
    aet: str
    http_port: int
    dicom_port: int
    host: str = "127.0.0.1"
    # HTTPS on `http_port`, served by a TLS front (stunnel) in front of Orthanc,
    # which then listens on loopback only, on `orthanc_http_port`. Orthanc's own
    # SslEnabled crashes with Debian's civetweb and OpenSSL 3 (see SECURITY.md).
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.http_port}"

    @property
    def orthanc_http_port(self) -> int:
        """Where Orthanc itself listens for HTTP: behind the TLS front when there is one."""
        return self.http_port + INTERNAL_HTTP_PORT_OFFSET if self.tls else self.http_port

    @property
    def local_url(self) -> str:
        """The server as its own plugin reaches it: Orthanc itself on loopback, with no TLS hop."""
        return f"http://127.0.0.1:{self.orthanc_http_port}"


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    pg_host: str
    pg_port: int
    pg_user: str
    pg_password: str
    pg_database: str
    orthanc_username: str
    orthanc_password: str
    raw: OrthancNode
    anon: OrthancNode
    vna: OrthancNode
    dicomweb_destination: OrthancNode
    ftps_port: int
    ftps_username: str
    ftps_password: str
    raw_max_storage_mb: int
    max_transfers_in_flight: int
    studies_per_second: float
    projects_dir: Path
    tag_rules_dir: Path
    export_root: Path
    secrets_backend: str
    secrets_file: Path
    instance_name: str = field(default="")
    # raw's work queue (orthanc_plugins/raw): a second archive asked only when
    # the primary lacks a study ("" = none), how long a claimed job is held
    # before another instance may take it back, and retry/backoff limits.
    # An optional second archive, asked only when the primary lacks a study.
    secondary_vna: OrthancNode | None = field(default=None)
    job_lease_seconds: float = field(default=60.0)
    retry_base_seconds: float = field(default=5.0)
    retry_max_seconds: float = field(default=600.0)
    max_attempts: int = field(default=8)
    move_timeout_seconds: float = field(default=900.0)
    # Reliability (job_queue.RetryPolicy): how long an outage may last before the
    # studies waiting on it fail, and how many worker processes a study may take down.
    give_up_seconds: float = field(default=48 * 3600.0)
    max_crashes: int = field(default=2)
    # Throughput and bounded storage: anon's de-identification workers (studies in
    # flight in one anon), how long anon keeps exported copies for its web UI
    # (0: deleted once exported), how much of raw's cache may be held for anon
    # (0: half of raw's maximum storage), and the free disk below which a server
    # reports itself unhealthy.
    anon_workers: int = field(default=2)
    anon_keep_hours: float = field(default=168.0)
    raw_hold_limit_mb: int = field(default=0)
    min_free_disk_mb: int = field(default=1024)
    # Security (SECURITY.md). The CA bundle every PIXL HTTP client verifies raw
    # and anon with (None: the system's CAs); the certificate and key of the
    # HTTPS front (files; or secrets pixl-tls-certificate / pixl-tls-key; the
    # native stack makes its own CA when neither exists); DICOM TLS between
    # raw and the archive; how long the access audit is kept.
    tls_ca_bundle: Path | None = field(default=None)
    tls_certificate_file: Path | None = field(default=None)
    tls_key_file: Path | None = field(default=None)
    # Names the generated certificate is also valid for, beyond localhost and the
    # raw/anon hosts: the server's own DNS names, other containers (compose).
    tls_hostnames: tuple[str, ...] = field(default=())
    dicom_tls: bool = field(default=False)
    audit_retention_days: int = field(default=365)

    @property
    def http_verify(self) -> str | bool:
        """What `requests` verifies PIXL's servers with: the CA bundle, or the system's CAs."""
        return str(self.tls_ca_bundle) if self.tls_ca_bundle else True

    @property
    def pg_conninfo(self) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} dbname={self.pg_database} "
            f"user={self.pg_user} password={self.pg_password}"
        )

    @property
    def raw_hold_limit_bytes(self) -> int | None:
        """How many bytes of studies raw may hold for anon; None: no limit (no maximum storage)."""
        limit_mb = self.raw_hold_limit_mb or self.raw_max_storage_mb // 2
        return limit_mb * 1024 * 1024 if limit_mb > 0 else None

    @property
    def secondary_vna_modality(self) -> str:
        """raw's name for the secondary archive (in its DicomModalities), or ""."""
        return self.secondary_vna.name if self.secondary_vna else ""

    @property
    def orthanc_auth(self) -> tuple[str, str]:
        return (self.orthanc_username, self.orthanc_password)


def load_env_file(path: Path | None = None) -> None:
    """Put the `KEY=value` lines of a `.env` file into the environment.

    Variables already set in the environment win, so a deployment can override
    any line. Comments (`#`, also after a value) and blank lines are ignored.
    """
    path = path or Path(os.environ.get("PIXL_ENV_FILE", REPO_ROOT / ".env"))
    if not path.is_file():
        return
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=value")
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


def _secondary_vna() -> OrthancNode | None:
    aet = _env("PIXL_SECONDARY_VNA_AE_TITLE", "")
    if not aet:
        return None
    return OrthancNode(
        name="secondary-vna", aet=aet, http_port=0,
        dicom_port=_env_int("PIXL_SECONDARY_VNA_DICOM_PORT", 104),
        host=_env("PIXL_SECONDARY_VNA_HOST", "127.0.0.1"),
    )


def load_settings() -> Settings:
    """Read the settings from the environment (see `.env.example`)."""
    state_dir = Path(_env("PIXL_STATE_DIR", str(REPO_ROOT / ".state"))).resolve()
    port_base = _env_int("PIXL_PORT_BASE", 28000)
    tls = _env_flag("PIXL_TLS", True)
    tls_folder = state_dir / "tls"
    return Settings(
        state_dir=state_dir,
        pg_host=_env("PIXL_DB_HOST", "127.0.0.1"),
        pg_port=_env_int("PIXL_DB_PORT", port_base + 432),
        pg_user=_env("PIXL_DB_USER", "pixl"),
        pg_password=_env("PIXL_DB_PASSWORD", "pixl-dev-password"),
        pg_database=_env("PIXL_DB_NAME", "pixl"),
        orthanc_username=_env("ORTHANC_USERNAME", "pixl"),
        orthanc_password=_env("ORTHANC_PASSWORD", "pixl-dev-password"),
        raw=OrthancNode(
            name="raw",
            aet=_env("ORTHANC_RAW_AE_TITLE", "PIXLRAW"),
            http_port=_env_int("ORTHANC_RAW_HTTP_PORT", port_base + 42),
            dicom_port=_env_int("ORTHANC_RAW_DICOM_PORT", port_base + 242),
            host=_env("ORTHANC_RAW_HOST", "127.0.0.1"),
            tls=tls,
        ),
        anon=OrthancNode(
            name="anon",
            aet=_env("ORTHANC_ANON_AE_TITLE", "PIXLANON"),
            http_port=_env_int("ORTHANC_ANON_HTTP_PORT", port_base + 43),
            dicom_port=_env_int("ORTHANC_ANON_DICOM_PORT", port_base + 243),
            host=_env("ORTHANC_ANON_HOST", "127.0.0.1"),
            tls=tls,
        ),
        vna=OrthancNode(
            name="vna",
            aet=_env("VNA_AE_TITLE", "DEVVNA"),
            http_port=_env_int("VNA_HTTP_PORT", port_base + 44),
            dicom_port=_env_int("VNA_DICOM_PORT", port_base + 244),
            host=_env("VNA_HOST", "127.0.0.1"),
        ),
        dicomweb_destination=OrthancNode(
            name="dicomweb",
            aet=_env("DICOMWEB_DEST_AE_TITLE", "DICOMWEBDEST"),
            http_port=_env_int("DICOMWEB_DEST_HTTP_PORT", port_base + 45),
            dicom_port=_env_int("DICOMWEB_DEST_DICOM_PORT", port_base + 245),
        ),
        ftps_port=_env_int("FTPS_PORT", port_base + 21),
        ftps_username=_env("FTPS_USERNAME", "pixl"),
        ftps_password=_env("FTPS_PASSWORD", "pixl-dev-password"),
        raw_max_storage_mb=_env_int("ORTHANC_RAW_MAXIMUM_STORAGE_MB", 10240),
        max_transfers_in_flight=_env_int("PIXL_MAX_TRANSFERS_IN_FLIGHT", 5),
        studies_per_second=_env_float("PIXL_STUDIES_PER_SECOND", 5.0),
        projects_dir=Path(_env("PIXL_PROJECTS_DIR", str(REPO_ROOT / "projects"))),
        tag_rules_dir=Path(_env("PIXL_TAG_RULES_DIR", str(REPO_ROOT / "tag_rules"))),
        export_root=Path(_env("PIXL_EXPORT_ROOT", str(state_dir / "exports"))),
        secrets_backend=_env("PIXL_SECRETS_BACKEND", "file"),
        secrets_file=Path(_env("PIXL_SECRETS_FILE", str(state_dir / "secrets" / "secrets.json"))),
        instance_name=_env("PIXL_INSTANCE_NAME", ""),
        secondary_vna=_secondary_vna(),
        job_lease_seconds=_env_float("PIXL_JOB_LEASE_SECONDS", 60.0),
        retry_base_seconds=_env_float("PIXL_RETRY_BASE_SECONDS", 5.0),
        retry_max_seconds=_env_float("PIXL_RETRY_MAX_SECONDS", 600.0),
        max_attempts=_env_int("PIXL_MAX_ATTEMPTS", 8),
        move_timeout_seconds=_env_float("PIXL_MOVE_TIMEOUT_SECONDS", 900.0),
        give_up_seconds=_env_float("PIXL_GIVE_UP_HOURS", 48.0) * 3600,
        max_crashes=_env_int("PIXL_MAX_CRASHES", 2),
        anon_workers=max(1, _env_int("PIXL_ANON_WORKERS", 2)),
        anon_keep_hours=_env_float("PIXL_ANON_KEEP_HOURS", 168.0),
        raw_hold_limit_mb=_env_int("PIXL_RAW_HOLD_LIMIT_MB", 0),
        min_free_disk_mb=_env_int("PIXL_MIN_FREE_DISK_MB", 1024),
        tls_ca_bundle=_env_path("PIXL_TLS_CA_BUNDLE", tls_folder / "ca.pem") if tls else None,
        tls_certificate_file=_env_path("PIXL_TLS_CERTIFICATE_FILE", tls_folder / "server.pem"),
        tls_key_file=_env_path("PIXL_TLS_KEY_FILE", tls_folder / "server-key.pem"),
        tls_hostnames=tuple(name.strip() for name in _env("PIXL_TLS_HOSTNAMES", "").split(",")
                            if name.strip()),
        dicom_tls=_env_flag("PIXL_DICOM_TLS", False),
        audit_retention_days=_env_int("PIXL_AUDIT_RETENTION_DAYS", 365),
    )
