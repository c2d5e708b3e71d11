"""The native PIXL stack: PostgreSQL and the Orthanc servers as plain processes.

`Stack.up()` starts what is not running and returns once every server answers
and both plugins report healthy; `down()` stops everything by recorded PID;
`status()` tells what runs and what crashed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import requests

from orthanc_plugins.common.access import ensure_admin
from orthanc_plugins.common.secrets import check_secret_file, open_secret_store
from orthanc_plugins.common.settings import OrthancNode, Settings
from pixl_stack.certs import make_self_signed_cert, tls_material
from pixl_stack.postgres import PostgresCluster
from pixl_stack.processes import ManagedProcess, StackError, port_open, wait_until
from pixl_stack.render import modality, orthanc_index_database, render_config, render_tls_front

ORTHANC_BINARY = os.environ.get("PIXL_ORTHANC_BINARY", "/usr/sbin/Orthanc")
STUNNEL_BINARY = os.environ.get("PIXL_STUNNEL_BINARY", "/usr/bin/stunnel4")
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class OrthancServer:
    node: OrthancNode
    template: str
    has_pixl_plugin: bool
    settings: Settings  # what its plugin reads (an extra raw has its own AE title and ports)
    process_name: str


@dataclass(frozen=True)
class ServerStatus:
    name: str
    state: str  # "running", "stopped" or "crashed"
    pid: int | None
    detail: str


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes every child process read these same settings."""
    env = {
        "PIXL_STATE_DIR": str(settings.state_dir),
        "PIXL_DB_HOST": settings.pg_host,
        "PIXL_DB_PORT": str(settings.pg_port),
        "PIXL_DB_USER": settings.pg_user,
        "PIXL_DB_PASSWORD": settings.pg_password,
        "PIXL_DB_NAME": settings.pg_database,
        "ORTHANC_USERNAME": settings.orthanc_username,
        "ORTHANC_PASSWORD": settings.orthanc_password,
        "ORTHANC_RAW_AE_TITLE": settings.raw.aet,
        "ORTHANC_RAW_HTTP_PORT": str(settings.raw.http_port),
        "ORTHANC_RAW_DICOM_PORT": str(settings.raw.dicom_port),
        "ORTHANC_RAW_HOST": settings.raw.host,
        "ORTHANC_ANON_AE_TITLE": settings.anon.aet,
        "ORTHANC_ANON_HTTP_PORT": str(settings.anon.http_port),
        "ORTHANC_ANON_DICOM_PORT": str(settings.anon.dicom_port),
        "ORTHANC_ANON_HOST": settings.anon.host,
        "VNA_AE_TITLE": settings.vna.aet,
        "VNA_HTTP_PORT": str(settings.vna.http_port),
        "VNA_DICOM_PORT": str(settings.vna.dicom_port),
        "VNA_HOST": settings.vna.host,
        "DICOMWEB_DEST_HTTP_PORT": str(settings.dicomweb_destination.http_port),
        "DICOMWEB_DEST_DICOM_PORT": str(settings.dicomweb_destination.dicom_port),
        "FTPS_PORT": str(settings.ftps_port),
        "FTPS_USERNAME": settings.ftps_username,
        "FTPS_PASSWORD": settings.ftps_password,
        "ORTHANC_RAW_MAXIMUM_STORAGE_MB": str(settings.raw_max_storage_mb),
        "PIXL_MAX_TRANSFERS_IN_FLIGHT": str(settings.max_transfers_in_flight),
        "PIXL_STUDIES_PER_SECOND": str(settings.studies_per_second),
        "PIXL_PROJECTS_DIR": str(settings.projects_dir),
        "PIXL_TAG_RULES_DIR": str(settings.tag_rules_dir),
        "PIXL_EXPORT_ROOT": str(settings.export_root),
        "PIXL_SECRETS_BACKEND": settings.secrets_backend,
        "PIXL_SECRETS_FILE": str(settings.secrets_file),
        "PIXL_INSTANCE_NAME": settings.instance_name,
        "PIXL_JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "PIXL_RETRY_BASE_SECONDS": str(settings.retry_base_seconds),
        "PIXL_RETRY_MAX_SECONDS": str(settings.retry_max_seconds),
        "PIXL_MAX_ATTEMPTS": str(settings.max_attempts),
        "PIXL_MOVE_TIMEOUT_SECONDS": str(settings.move_timeout_seconds),
        "PIXL_GIVE_UP_HOURS": str(settings.give_up_seconds / 3600),
        "PIXL_MAX_CRASHES": str(settings.max_crashes),
        "PIXL_ANON_WORKERS": str(settings.anon_workers),
        "PIXL_ANON_KEEP_HOURS": str(settings.anon_keep_hours),
        "PIXL_RAW_HOLD_LIMIT_MB": str(settings.raw_hold_limit_mb),
        "PIXL_MIN_FREE_DISK_MB": str(settings.min_free_disk_mb),
    }
    env.update({
        "PIXL_TLS": "1" if settings.raw.tls else "0",
        "PIXL_TLS_CA_BUNDLE": str(settings.tls_ca_bundle or "none"),
        "PIXL_TLS_CERTIFICATE_FILE": str(settings.tls_certificate_file or "none"),
        "PIXL_TLS_KEY_FILE": str(settings.tls_key_file or "none"),
        "PIXL_DICOM_TLS": "1" if settings.dicom_tls else "0",
        "PIXL_AUDIT_RETENTION_DAYS": str(settings.audit_retention_days),
    })
    if settings.secondary_vna:
        env.update({
            "PIXL_SECONDARY_VNA_AE_TITLE": settings.secondary_vna.aet,
            "PIXL_SECONDARY_VNA_HOST": settings.secondary_vna.host,
            "PIXL_SECONDARY_VNA_DICOM_PORT": str(settings.secondary_vna.dicom_port),
        })
    return env


class Stack:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state_dir = settings.state_dir
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "logs"
        self.postgres = PostgresCluster.for_state_dir(self.state_dir, settings.pg_port)
        self.servers = [
            OrthancServer(settings.vna, "vna", False, settings, "vna"),
            OrthancServer(settings.raw, "raw", True, settings, "raw"),
            OrthancServer(settings.anon, "anon", True, settings, "anon"),
            OrthancServer(settings.dicomweb_destination, "dicomweb", False, settings, "dicomweb"),
        ]

    # -- lifecycle -------------------------------------------------------

    def up(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        check_secret_file(self.settings)
        self.postgres.start()
        self.postgres.ensure_role_and_database(
            self.settings.pg_user, self.settings.pg_password, self.settings.pg_database
        )
        ensure_admin(open_secret_store(self.settings), self.settings)
        for server in self.servers:
            self._start_orthanc(server)
        self._start_ftps()
        for server in self.servers:
            self._wait_ready(server)
        wait_until(lambda: port_open(self.settings.ftps_port), START_TIMEOUT, "the FTPS server")

    def start_raw_instance(self, name: str, port_offset: int) -> Settings:
        """Another raw server on the same PIXL database, as when scaling out: its own
        AE title, ports, storage and Orthanc index, known to the VNA as a C-MOVE
        destination. Returns the settings its plugin runs with."""
        raw = self.settings.raw
        node = dataclasses.replace(
            raw, aet=f"{raw.aet}{name.upper()}"[:16], http_port=raw.http_port + port_offset,
            dicom_port=raw.dicom_port + port_offset,
        )
        settings = dataclasses.replace(self.settings, raw=node, instance_name=name)
        server = self._start_extra(OrthancServer(node, "raw", True, settings, f"raw-{name}"))
        destination = modality(node, find=True, move=True, store=False)
        response = requests.put(f"{self.settings.vna.url}/modalities/{server.process_name}",
                                json=destination, auth=self.settings.orthanc_auth, timeout=10)
        if response.status_code != 200:
            raise StackError(f"the VNA refused to learn {server.process_name}: HTTP {response.status_code}")
        return settings

    def start_anon_instance(self, name: str, port_offset: int) -> Settings:
        """Another anon server on the same PIXL database, as when scaling out: its own
        ports, storage and staging, taking work from the same queue. Returns its settings."""
        anon = self.settings.anon
        node = dataclasses.replace(anon, http_port=anon.http_port + port_offset,
                                   dicom_port=anon.dicom_port + port_offset)
        settings = dataclasses.replace(self.settings, anon=node, instance_name=name)
        self._start_extra(OrthancServer(node, "anon", True, settings, f"anon-{name}"))
        return settings

    def _start_extra(self, server: OrthancServer) -> OrthancServer:
        """Start a server beyond the stack's own; `up` starts it again after a crash."""
        try:
            self._start_orthanc(server)
            self._wait_ready(server)
        except StackError:
            self._process(server.process_name).stop()
            raise
        self.servers.append(server)
        return server

    def stop_raw_instance(self, name: str) -> None:
        """Stop a raw server started by `start_raw_instance`; `up` no longer starts it."""
        self.stop_extra(f"raw-{name}")

    def stop_extra(self, process_name: str) -> None:
        """Stop a server started beyond the stack's own, and its HTTPS front."""
        self.servers = [s for s in self.servers if s.process_name != process_name]
        self._process(process_name).stop()
        self._process(f"{process_name}-tls").stop()

    def down(self) -> None:
        # Every process that left a PID file: extra raw servers included.
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            self._process(pid_file.stem).stop()
        self.postgres.stop()
        ports = [p for s in self.servers
                 for p in {s.node.http_port, s.node.orthanc_http_port, s.node.dicom_port}]
        ports.append(self.settings.ftps_port)
        wait_until(
            lambda: not any(port_open(p) for p in [*ports, self.settings.pg_port]),
            30, "every port of the stack to close",
        )

    def status(self) -> list[ServerStatus]:
        statuses = [self._postgres_status()]
        for server in self.servers:
            statuses.append(self._process_status(server.process_name, server.node.url))
            if server.node.tls:
                statuses.append(self._process_status(
                    f"{server.process_name}-tls", f"HTTPS front of {server.process_name}"))
        statuses.append(self._process_status("ftps", f"ftps://127.0.0.1:{self.settings.ftps_port}"))
        return statuses

    # -- internals -------------------------------------------------------

    def _process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name, self.run_dir, self.log_dir)

    def _process_status(self, name: str, where: str) -> ServerStatus:
        process = self._process(name)
        pid = process.pid()
        if process.is_running():
            return ServerStatus(name, "running", pid, where)
        if pid is not None:
            return ServerStatus(name, "crashed", pid, f"process {pid} is gone; see {process.log_file}")
        return ServerStatus(name, "stopped", None, "")

    def _postgres_status(self) -> ServerStatus:
        pid = self.postgres.pid()
        if self.postgres.running():
            return ServerStatus("postgres", "running", pid, f"127.0.0.1:{self.settings.pg_port}")
        if pid is not None:
            return ServerStatus("postgres", "crashed", pid, f"see {self.postgres.log_file}")
        return ServerStatus("postgres", "stopped", None, "")

    def child_environment(self, settings: Settings | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(settings_environment(settings or self.settings))
        env["TCP_NODELAY"] = "1"  # without it every DIMSE round trip waits ~50 ms
        # glibc gives each thread that allocates its own heap arena; with Orthanc's HTTP and
        # DICOM threads and PIXL's workers passing 0.5 MB instances around, the arenas keep
        # hundreds of MB that are free but never returned. Two arenas bound that.
        env["MALLOC_ARENA_MAX"] = "2"
        env["PIXL_SITE_PACKAGES"] = sysconfig.get_paths()["purelib"]
        return env

    def _start_orthanc(self, server: OrthancServer) -> None:
        process = self._process(server.process_name)
        if process.is_running():
            return
        ports = {server.node.orthanc_http_port, server.node.dicom_port}
        if not self._process(f"{server.process_name}-tls").is_running():  # a front outlives its Orthanc
            ports.add(server.node.http_port)
        for port in sorted(ports):
            if port_open(port):
                raise StackError(
                    f"port {port} for {server.process_name} is taken by another process; "
                    "change it in .env (PIXL_PORT_BASE or the server's own port variable)"
                )
        if server.template == "raw":
            self.postgres.ensure_role_and_database(
                server.settings.pg_user, server.settings.pg_password,
                orthanc_index_database(server.settings, server.node),
            )
        storage = self.state_dir / "storage" / server.process_name
        storage.mkdir(parents=True, exist_ok=True)
        config = render_config(server.template, server.settings, server.node, storage)
        config_file = self.state_dir / "config" / f"{server.process_name}.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config, indent=2))
        config_file.chmod(0o600)  # no password, but the layout of the servers
        process.start(
            [ORTHANC_BINARY, f"--logfile={process.log_file}", str(config_file)],
            self.child_environment(server.settings),
        )
        if server.node.tls:
            self._start_tls_front(server)

    def _start_tls_front(self, server: OrthancServer) -> None:
        """stunnel: HTTPS on the node's port, plain HTTP to Orthanc on loopback."""
        front = self._process(f"{server.process_name}-tls")
        if front.is_running():
            return
        settings = server.settings
        certfile, keyfile = tls_material(settings, open_secret_store(settings))
        config_file = self.state_dir / "config" / f"{front.name}.conf"
        config_file.write_text(render_tls_front(server.node, certfile, keyfile))
        front.start([STUNNEL_BINARY, str(config_file)], self.child_environment(settings))


    @property
    def ftps_root(self) -> Path:
        return self.state_dir / "ftps" / "root"

    @property
    def ftps_upload_log(self) -> Path:
        """What the development FTPS server received (`ftps_server.read_upload_log`)."""
        return self.state_dir / "ftps" / "uploads.log"

    @property
    def ftps_certificate(self) -> Path:
        return self.state_dir / "ftps" / "cert.pem"

    def development_destination_settings(self) -> dict[str, dict[str, str]]:
        """Secrets (by service, then field) that point a project at this stack's own
        FTPS and DICOMweb servers: `<alias>--<service>--<field>` in the secret store."""
        return {
            "ftp": {
                "host": "127.0.0.1", "port": str(self.settings.ftps_port),
                "username": self.settings.ftps_username, "password": self.settings.ftps_password,
                "ca-cert": self.ftps_certificate.read_text(),
            },
            "dicomweb": {
                "url": self.settings.dicomweb_destination.url + "/dicom-web",
                "username": self.settings.orthanc_username,
                "password": self.settings.orthanc_password,
            },
        }

    def _start_ftps(self) -> None:
        """The development FTPS server (a destination for the demo, never deployed)."""
        process = self._process("ftps")
        if process.is_running():
            return
        if port_open(self.settings.ftps_port):
            raise StackError(f"port {self.settings.ftps_port} for ftps is taken; set FTPS_PORT")
        folder = self.ftps_root.parent
        self.ftps_root.mkdir(parents=True, exist_ok=True)
        key = folder / "key.pem"
        if not self.ftps_certificate.exists():
            make_self_signed_cert(self.ftps_certificate, key)
        password_file = folder / "password"
        password_file.write_text(self.settings.ftps_password + "\n")
        password_file.chmod(0o600)
        process.start(
            [sys.executable, "-m", "pixl_stack.ftps_server", "--host", "127.0.0.1",
             "--port", str(self.settings.ftps_port), "--root", str(self.ftps_root),
             "--user", self.settings.ftps_username, "--password-file", str(password_file),
             "--certfile", str(self.ftps_certificate), "--keyfile", str(key),
             "--upload-log", str(self.ftps_upload_log)],
            self.child_environment(),
        )

    def _wait_ready(self, server: OrthancServer) -> None:
        process = self._process(server.process_name)
        auth = self.settings.orthanc_auth

        def answers() -> bool:
            if not process.is_running():
                raise StackError(
                    f"{server.process_name} exited during start; see {process.log_file}"
                    f" and {self.log_dir / (server.process_name + '.out')}"
                )
            try:
                uri = "/pixl/health" if server.has_pixl_plugin else "/system"
                response = requests.get(server.node.url + uri, auth=auth, timeout=2,
                                        verify=self.settings.http_verify)
            except requests.RequestException:
                return False
            if response.status_code != 200:
                return False
            return not server.has_pixl_plugin or bool(response.json().get("healthy"))

        wait_until(answers, START_TIMEOUT, f"{server.process_name} to answer and report healthy")
