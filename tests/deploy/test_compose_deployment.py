"""The deployment, for real: `docker compose up --build` on a real Docker engine.

From a clean copy of the checkout (what git tracks, no .env, no .venv) with a
test .env, on an engine of the test's own (docker_engine.py), it builds both
images from debian:bookworm, starts PostgreSQL, two raw servers
(docker-compose.raw-2.yml) and three anon replicas (--scale), and runs
extracts through them: the development VNA and an FTPS destination run on
the host as plain processes, reached by the containers at the host's address
on the engine's bridge. Every port is published on 127.0.0.1 only, raw's and
anon's web ports as HTTPS with the one certificate of the deployment, which
pixl-tui and the test verify with the deployment's CA.

The order of the tests is the order of a deployment's life; the last one takes
it down and checks that nothing is left.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from docker_engine import CACHE_DIR, COMPOSE, DockerEngine, install_packages, run
from stack_support import start_orthanc

from orthanc_plugins.common.settings import OrthancNode, Settings, load_settings
from orthanc_plugins.raw.extracts import extract_name_for
from pixl_stack import studygen
from pixl_stack.certs import DevelopmentPki, make_self_signed_cert
from pixl_stack.dcmtk import storescu
from pixl_stack.omop import Procedure, write_omop_extract
from pixl_stack.processes import ManagedProcess, port_free, wait_until
from pixl_stack.render import render_config
from tui import exit_codes
from tui.client import ClientConfig, ExtractStatus, RawClient

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# The third file gives the compose network the subnet the test expects: raw sees the
# VNA on the host at that network's gateway, and checks the address of every
# association against the VNA's (DicomCheckModalityHost).
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.raw-2.yml",
                 "tests/deploy/docker-compose.network.yml")
OFFLINE_FILE = Path(__file__).parent / "docker-compose.offline.yml"
PROJECT = "demo"  # projects/demo.yaml: exported to FTPS
ANON_REPLICAS = 3
RAW_SERVICES = ("orthanc-raw", "orthanc-raw-2")
ACTIVE_STATES = ("querying", "retrieving", "cached", "anonymising", "exporting")

pytestmark = [
    pytest.mark.timeout(2400),
    pytest.mark.skipif(os.geteuid() != 0, reason="a Docker engine (dockerd) needs root here"),
]


def _ports(count: int) -> list[int]:
    """Ports of this test's own, in the session's range (conftest) above what others use."""
    base = int(os.environ["PIXL_PORT_BASE"]) + 600
    ports = [base + offset for offset in range(count)]
    busy = [port for port in ports if not port_free(port)]
    assert not busy, f"ports {busy} of the deployment test are taken"
    return ports


@dataclass
class Deployment:
    engine: DockerEngine
    checkout: Path
    settings: Settings  # the host's view: published ports, credentials
    raw_urls: dict[str, str]
    anon_http_ports: range
    vna: OrthancNode
    ftps_root: Path
    compose_env: dict[str, str]
    ca_bundle: Path  # the deployment's CA, taken from its state volume

    def compose(self, *args: str, timeout: float = 600, check: bool = True,
                input: bytes | None = None):
        files = [arg for name in COMPOSE_FILES for arg in ("-f", name)]
        return run([str(COMPOSE), "-p", "pixltest", *files, *args],
                   env=self.compose_env, timeout=timeout, check=check, cwd=self.checkout,
                   input=input)

    def up(self, *args: str, timeout: float = 1200):
        """Start whatever is stopped (nothing is rebuilt or recreated) and wait for health."""
        return self.compose("up", "-d", "--no-build", "--no-recreate", "--scale",
                            f"orthanc-anon={ANON_REPLICAS}", "--wait", "--wait-timeout",
                            str(int(timeout)), *args, timeout=timeout + 60)

    def stop(self, containers: list[str]) -> None:
        if containers:
            self.engine.docker("stop", *containers)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def client(self, raw: str = "orthanc-raw") -> RawClient:
        return RawClient(ClientConfig(self.raw_urls[raw], *self.settings.orthanc_auth,
                                      ca_bundle=str(self.ca_bundle)))

    def tui(self, *args: str, raw: str = "orthanc-raw", timeout: float = 300):
        env = dict(os.environ, ORTHANC_USERNAME=self.settings.orthanc_username,
                   ORTHANC_PASSWORD=self.settings.orthanc_password,
                   PIXL_TLS_CA_BUNDLE=str(self.ca_bundle))
        return subprocess.run([str(VENV_BIN / "pixl-tui"), "--url", self.raw_urls[raw], *args],
                              env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _clean_checkout(into: Path) -> Path:
    """What git tracks (and untracked files it does not ignore): no .env, .venv, .state."""
    files = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                 "--exclude-standard"]).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (into / "pixl" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / "pixl" / name)
    return into / "pixl"


def _write_env(path: Path, values: dict[str, object]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)


def _start_vna(node: OrthancNode, settings: Settings, work: Path) -> ManagedProcess:
    """The development VNA on the host; raw reaches it through the engine's bridge."""
    storage = work / "vna-storage"
    storage.mkdir(parents=True)
    return start_orthanc("vna", node, render_config("vna", settings, node, storage), settings, work)


def _start_ftps(engine: DockerEngine, port: int, settings: Settings, work: Path) -> ManagedProcess:
    """The FTPS destination on the host, listening on the bridge address only."""
    folder = work / "ftps"
    (folder / "root").mkdir(parents=True)
    make_self_signed_cert(folder / "cert.pem", folder / "key.pem", (engine.host_address,))
    (folder / "password").write_text(settings.ftps_password + "\n")
    (folder / "password").chmod(0o600)
    process = ManagedProcess("ftps", work / "run", work / "logs")
    process.start([sys.executable, "-m", "pixl_stack.ftps_server", "--host", engine.host_address,
                   "--port", str(port), "--root", str(folder / "root"),
                   "--user", settings.ftps_username, "--password-file", str(folder / "password"),
                   "--certfile", str(folder / "cert.pem"), "--keyfile", str(folder / "key.pem")],
                  dict(os.environ))
    wait_until(lambda: not port_free(port, engine.host_address), 30, "the FTPS server")
    return process


# The destination secrets of project `demo`, written by an operator's command inside
# the anon container into the file secret store on the shared state volume. The
# values come on stdin, never on a command line.
SET_SECRETS = (
    "import json, sys\n"
    "from orthanc_plugins.common.secrets import open_secret_store\n"
    "from orthanc_plugins.common.settings import load_settings\n"
    "store = open_secret_store(load_settings())\n"
    "for name, value in json.load(sys.stdin).items(): store.set(name, value)\n"
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    install_packages()
    work = tmp_path_factory.mktemp("deploy")
    work.chmod(0o755)
    engine = DockerEngine(work / "engine")
    (raw_http, raw_dicom, raw2_http, raw2_dicom, vna_http, vna_dicom, ftps_port,
     anon_first, *_) = _ports(8 + ANON_REPLICAS)
    anon_ports = range(anon_first, anon_first + ANON_REPLICAS)
    base = load_settings()
    settings = dataclasses.replace(
        base, orthanc_username="pixl", orthanc_password=secrets.token_urlsafe(12),
        ftps_username="pixl", ftps_password=secrets.token_urlsafe(12),
        raw=OrthancNode("raw", "PIXLRAW", raw_http, raw_dicom),
        vna=OrthancNode("vna", "DEVVNA", vna_http, vna_dicom),
    )
    processes: list[ManagedProcess] = []
    deployment = None
    try:
        engine.start()
        base_image = engine.ensure_base_image()
        processes.append(_start_vna(settings.vna, settings, work))
        # The VNA sends each raw server's C-MOVE answers to its published DICOM port.
        requests.put(f"{settings.vna.url}/modalities/raw-2", auth=settings.orthanc_auth, timeout=10,
                     json={"AET": "PIXLRAW2", "Host": "127.0.0.1", "Port": raw2_dicom,
                           "AllowFind": True, "AllowMove": True}).raise_for_status()
        processes.append(_start_ftps(engine, ftps_port, settings, work))
        checkout = _clean_checkout(work / "checkout")
        _write_env(checkout / ".env", {
            "PIXL_DB_PASSWORD": secrets.token_urlsafe(12),
            "ORTHANC_USERNAME": settings.orthanc_username,
            "ORTHANC_PASSWORD": settings.orthanc_password,
            "ORTHANC_RAW_AE_TITLE": "PIXLRAW", "ORTHANC_RAW_2_AE_TITLE": "PIXLRAW2",
            "VNA_AE_TITLE": "DEVVNA", "VNA_HOST": engine.compose_gateway, "VNA_DICOM_PORT": vna_dicom,
            "PIXL_HTTP_BIND_ADDRESS": "127.0.0.1", "PIXL_DICOM_BIND_ADDRESS": "127.0.0.1",
            "ORTHANC_RAW_HTTP_PORT": raw_http, "ORTHANC_RAW_DICOM_PORT": raw_dicom,
            "ORTHANC_RAW_2_HTTP_PORT": raw2_http, "ORTHANC_RAW_2_DICOM_PORT": raw2_dicom,
            "ORTHANC_ANON_HTTP_PORT": anon_ports[0], "ORTHANC_ANON_HTTP_PORT_LAST": anon_ports[-1],
            "PIXL_MAX_TRANSFERS_IN_FLIGHT": 1,
            # A job held by a container that was stopped comes back within seconds; an
            # anon that is down is an outage, which counts no attempt.
            "PIXL_JOB_LEASE_SECONDS": 10, "PIXL_RETRY_BASE_SECONDS": 1,
            "PIXL_RETRY_MAX_SECONDS": 5,
        })
        deployment = Deployment(
            engine=engine, checkout=checkout, settings=settings,
            raw_urls={"orthanc-raw": f"https://127.0.0.1:{raw_http}",
                      "orthanc-raw-2": f"https://127.0.0.1:{raw2_http}"},
            anon_http_ports=anon_ports, vna=settings.vna, ftps_root=work / "ftps" / "root",
            # Compose interpolates from its own environment first: only the engine, no PIXL_*.
            compose_env={"PATH": os.environ["PATH"], "HOME": str(work),
                         "DOCKER_HOST": engine.env["DOCKER_HOST"],
                         "PIXL_TEST_COMPOSE_SUBNET": str(engine.compose_network)},
            ca_bundle=work / "deployment-ca.pem",
        )
        started = time.monotonic()
        deployment.compose("up", "-d", "--build", "--scale", f"orthanc-anon={ANON_REPLICAS}",
                           "--wait", "--wait-timeout", "900", timeout=2000)
        print(f"\ndeployment built and healthy in {time.monotonic() - started:.0f} s "
              f"(debian:bookworm {base_image}; data root {engine.data_root})")
        # What an operator does for pixl-tui (docs/deployment.md).
        deployment.compose("cp", "orthanc-raw:/var/lib/pixl/tls/ca.pem", str(deployment.ca_bundle))
        ftps_cert = (work / "ftps" / "cert.pem").read_text()
        values = {"host": engine.host_address, "port": str(ftps_port),
                  "username": settings.ftps_username, "password": settings.ftps_password,
                  "ca-cert": ftps_cert}
        deployment.compose("exec", "-T", "--index", "1", "orthanc-anon", "python", "-c", SET_SECRETS,
                           input=json.dumps({f"{PROJECT}--ftp--{k}": v for k, v in values.items()}).encode())
        yield deployment
    finally:
        if deployment is not None:
            logs = deployment.compose("logs", "--no-color", "--tail", "200", check=False)
            (work / "compose.log").write_text(logs.stdout + logs.stderr)
            deployment.compose("down", "-v", "--remove-orphans", check=False)
        for process in processes:
            process.stop()
        engine.stop()


# --- helpers over the running deployment ----------------------------------------------


def _studies(tmp: Path, count: int, seed: int) -> list[studygen.GeneratedStudy]:
    return [
        studygen.write_generated_study(
            studygen.StudySpec(modality=("CT", "MR")[index % 2], series=1, instances_per_series=2,
                               seed=seed + index),
            studygen.make_patient(seed + index), tmp / f"study-{seed + index}")
        for index in range(count)
    ]


def _load(deployment: Deployment, tmp: Path, name: str, studies: list[studygen.GeneratedStudy],
          when: datetime.datetime, raw: str = "orthanc-raw") -> str:
    for study in studies:
        storescu(study.files, deployment.vna)
    folder = write_omop_extract(tmp / name, PROJECT, when, [
        Procedure(index + 1, s.patient.mrn, s.accession, s.study_uid, s.study_date)
        for index, s in enumerate(studies)])
    loaded = deployment.tui("load", str(folder), "--yes", raw=raw)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    return next(s.key for s in deployment.client(raw).extracts()
                if s.extract == extract_name_for(when))


def _status(deployment: Deployment, key: str, raw: str = "orthanc-raw") -> ExtractStatus:
    return next(s for s in deployment.client(raw).extracts() if s.key == key)


def _wait(deployment: Deployment, key: str, what: str, predicate, raw: str = "orthanc-raw",
          timeout: float = 300) -> ExtractStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(deployment, key, raw)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"{key}: not {what} within {timeout:.0f} s: {status.counts}"
        time.sleep(0.5)


def _idle(status: ExtractStatus) -> bool:
    return not any(status.counts.get(state) for state in ACTIVE_STATES)


def _orthanc_studies(port: int, deployment: Deployment) -> int:
    response = requests.get(f"https://127.0.0.1:{port}/studies", auth=deployment.settings.orthanc_auth,
                            verify=str(deployment.ca_bundle), timeout=30)
    response.raise_for_status()
    return len(response.json())


def _published_port(deployment: Deployment, service: str, index: int) -> int:
    address = deployment.compose("port", "--index", str(index), service, "8042").stdout.strip()
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1", f"{service} #{index} is published on {address}, not 127.0.0.1 only"
    return int(port)


# --- the tests, in the order of a deployment's life -----------------------------------


def test_everything_comes_up_healthy_on_localhost_only(deployment: Deployment) -> None:
    ps = [json.loads(line) for line in deployment.compose("ps", "--format", "json").stdout.splitlines()]
    services = sorted(container["Service"] for container in ps)
    assert services == sorted(["postgres", *RAW_SERVICES, *["orthanc-anon"] * ANON_REPLICAS])
    assert all(container["Health"] == "healthy" for container in ps), ps
    for container in ps:
        for publisher in container.get("Publishers") or []:
            if publisher.get("PublishedPort"):
                assert publisher["URL"] == "127.0.0.1", publisher
    for raw in RAW_SERVICES:
        health = deployment.client(raw).health()
        assert health.healthy, raw
    anon_ports = {_published_port(deployment, "orthanc-anon", i) for i in range(1, ANON_REPLICAS + 1)}
    assert anon_ports == set(deployment.anon_http_ports), "each anon replica has a web UI port"
    # Each replica is its own Orthanc, with storage of its own.
    storage = set()
    for container in deployment.containers("orthanc-anon"):
        mounts = json.loads(deployment.engine.docker("inspect", "--format", "{{json .Mounts}}",
                                                     container).stdout)
        storage |= {m["Name"] for m in mounts if m["Destination"] == "/var/lib/orthanc/db"}
    assert len(storage) == ANON_REPLICAS, storage


def test_every_anon_replica_and_both_raw_servers_take_work_from_the_queue(
    deployment: Deployment, tmp_path: Path
) -> None:
    """One round per anon replica, the other replicas stopped, with an extract of one
    study: only that replica can take it. Round 1 runs on raw-2 alone, the others on
    raw alone. Then each replica and each raw server must hold what it processed."""
    anon = deployment.containers("orthanc-anon")
    raws = {raw: deployment.containers(raw)[0] for raw in RAW_SERVICES}
    for round_number, replica in enumerate(anon, start=1):
        live_raw = "orthanc-raw-2" if round_number == 1 else "orthanc-raw"
        deployment.stop([c for c in anon if c != replica] + [c for r, c in raws.items() if r != live_raw])
        study = _studies(tmp_path, 1, seed=7100 + round_number)
        when = datetime.datetime(2026, 1, round_number, 3, 4, 5)
        key = _load(deployment, tmp_path, f"extract-a{round_number}", study, when, raw=live_raw)
        status = _wait(deployment, key, "done", lambda s: s.done, raw=live_raw)
        assert status.counts == {"exported": 1}, (status.counts, status.last_error)
        deployment.up()
    held = {_published_port(deployment, "orthanc-anon", i): 0 for i in range(1, ANON_REPLICAS + 1)}
    for port in held:
        held[port] = _orthanc_studies(port, deployment)
    assert sorted(held.values()) == [1] * ANON_REPLICAS, f"studies held by each anon replica: {held}"
    for raw, url in deployment.raw_urls.items():
        assert _orthanc_studies(int(url.rpartition(":")[2]), deployment) >= 1, f"{raw} fetched nothing"


def test_a_restart_mid_extract_loses_nothing(deployment: Deployment, tmp_path: Path) -> None:
    """raw is restarted with the extract half fetched and none of it exported (anon is
    stopped meanwhile), then an anon replica while the studies are exported."""
    client = deployment.client()
    client.set_controls(paused=True, max_in_flight=1)
    studies = _studies(tmp_path, 4, seed=7200)
    key = _load(deployment, tmp_path, "extract-b", studies, datetime.datetime(2026, 2, 3, 4, 5, 6))
    deployment.stop(deployment.containers("orthanc-anon"))
    client.set_controls(paused=False)
    before = _wait(deployment, key, "partly fetched", lambda s: s.counts.get("cached", 0) >= 1)
    assert before.counts.get("exported", 0) == 0 and not before.done, before.counts

    deployment.compose("restart", "orthanc-raw")
    deployment.up()
    _wait(deployment, key, "partly exported", lambda s: s.counts.get("exported", 0) >= 1)
    deployment.engine.docker("restart", deployment.containers("orthanc-anon")[0])
    deployment.up()
    after = _wait(deployment, key, "done", lambda s: s.done)
    assert after.counts == {"exported": len(studies)}, after.counts

    zips = sorted((deployment.ftps_root / PROJECT).glob("*.zip"))
    # The three one-study extracts and extract-b: each study exactly once, nothing
    # half-written left.
    assert len(zips) == ANON_REPLICAS + len(studies), [z.name for z in zips]
    assert not [p for p in (deployment.ftps_root / PROJECT).iterdir() if p.suffix != ".zip"]


def test_the_studies_arrive_de_identified(deployment: Deployment, tmp_path: Path) -> None:
    zips = sorted((deployment.ftps_root / PROJECT).glob("*.zip"))
    assert zips
    # The same seeds generate the same studies as the tests before.
    source = _studies(tmp_path, 4, seed=7200) + [
        study for n in range(1, ANON_REPLICAS + 1) for study in _studies(tmp_path / str(n), 1, 7100 + n)]
    identifying = {value for s in source for value in (
        s.patient.mrn, s.accession, s.study_uid, s.patient.name)}
    seen_uids = set()
    for archive in zips:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            assert names, archive.name
            for name in names:
                dataset = pydicom.dcmread(io.BytesIO(z.read(name)))
                seen_uids.add(dataset.StudyInstanceUID)
                assert archive.stem == dataset.StudyInstanceUID
                values = {str(element.value) for element in dataset.iterall()
                          if element.VR not in ("OB", "OW", "OF", "UN", "SQ")}
                leaked = {v for v in identifying if any(v in value for value in values)}
                assert not leaked, f"{archive.name}/{name} holds source identifiers"
    assert len(seen_uids) == len(zips)


def test_pixl_tui_and_the_web_ui_work_against_the_deployment(
    deployment: Deployment, tmp_path: Path
) -> None:
    status = deployment.tui("status", "--json")
    assert status.returncode == 0, status.stderr
    extracts = {e["project"] + "/" + e["extract"]: e for e in json.loads(status.stdout)}
    assert len(extracts) == ANON_REPLICAS + 1, extracts
    assert all(e["done"] and e["counts"].get("exported") for e in extracts.values()), extracts
    health = deployment.tui("health")
    assert health.returncode == 0, health.stdout + health.stderr
    other_ca = DevelopmentPki(tmp_path / "other-ca").ensure().ca_certificate
    untrusted = deployment.tui("--ca-bundle", str(other_ca), "health")
    assert untrusted.returncode == exit_codes.UNREACHABLE, untrusted.stdout + untrusted.stderr
    assert "not signed by a trusted CA" in untrusted.stderr

    auth, ca = deployment.settings.orthanc_auth, str(deployment.ca_bundle)
    for url in [*deployment.raw_urls.values(),
                *(f"https://127.0.0.1:{p}" for p in deployment.anon_http_ports)]:
        page = requests.get(f"{url}/app/explorer.html", auth=auth, verify=ca, timeout=30)
        assert page.status_code == 200 and "Orthanc" in page.text, url
        refused = requests.get(f"{url}/studies", verify=ca, timeout=30)
        assert refused.status_code in (401, 403), f"{url} answers without authentication"
        # Published as HTTPS only, with the deployment's certificate, which nobody else signed.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url.replace("https://", "http://") + "/system", auth=auth, timeout=30)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/system", auth=auth, verify=str(other_ca), timeout=30)
    anon_studies = sum(_orthanc_studies(p, deployment) for p in deployment.anon_http_ports)
    assert anon_studies == ANON_REPLICAS + 4, "anon's web UI shows every de-identified study"


def test_an_offline_build_installs_from_the_wheelhouse(deployment: Deployment) -> None:
    """`make wheelhouse`, then a build with no network: pip takes everything from there."""
    wheelhouse = CACHE_DIR.parent / "wheelhouse"  # kept between runs, like the engine's cache
    # PyPI is verified with the machine's CAs, not the test stack's (REQUESTS_CA_BUNDLE).
    pip_env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    run([str(VENV_BIN / "pip"), "download", "-q", "--require-hashes", "--no-deps",
         "-r", str(deployment.checkout / "requirements.lock"), "-d", str(wheelhouse)],
        env=pip_env, timeout=900)
    target = deployment.checkout / "wheelhouse"
    for package in wheelhouse.iterdir():
        shutil.copy2(package, target / package.name)
    # A file of this run's own: the dependency layer is built again, never taken from cache.
    (target / f"run-{secrets.token_hex(8)}.txt").write_text("deployment test\n")
    built = run([str(COMPOSE), "--progress", "plain", "-p", "pixltest",
                 "-f", "docker-compose.yml", "-f", str(OFFLINE_FILE), "build", "orthanc-raw"],
                env=deployment.compose_env, cwd=deployment.checkout, timeout=1200)
    log = built.stdout + built.stderr
    assert "installing from wheelhouse/ only (offline)" in log, log[-3000:]
    assert "Successfully installed" in log


def test_down_leaves_no_container_volume_or_network(deployment: Deployment) -> None:
    deployment.compose("down", "-v", "--remove-orphans", timeout=300)
    engine = deployment.engine
    assert engine.docker("ps", "-aq").stdout.split() == []
    assert engine.docker("volume", "ls", "-q").stdout.split() == []
    networks = engine.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(networks) == ["bridge", "host", "none"], networks
