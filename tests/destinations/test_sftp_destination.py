"""The `sftp` destination against a real OpenSSH sshd on loopback, started by these tests
with a configuration, host keys and user keys of their own, and stopped by PID.

sshd runs as root (it must, to log a user in) and lets one system user in,
`pixl-sftp-test`, made if missing, with a fresh random password each session,
for SFTP only, in a folder of the session's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets as random_secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from destination_support import (
    assert_no_identifying_values,
    free_port,
    stop_process,
    wait_for_port,
)

from orthanc_plugins.common.projects import load_project
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_hooks import plugins
from pixl_hooks.types import (
    DestinationMisconfigured,
    DestinationRejected,
    DestinationUnavailable,
    ExportableStudy,
)

SSHD = Path("/usr/sbin/sshd")
SFTP_USER = "pixl-sftp-test"
ALIAS = "demo"  # the demo project's secrets are named by its slug


@dataclasses.dataclass
class SshServer:
    port: int
    root: Path  # where the SFTP session starts: the destination's top folder
    config: Path
    log: Path
    host_public_key: str
    password: str
    user_private_key: str
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """Stop sshd and every session it runs (each session is its own process group)."""
        if self.process is not None:
            for pid in _descendants(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stop_process(self.process)
            self.process = None


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren...: a session's monitor and the user's SFTP process."""
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat_file.parent.name)] = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _ensure_sshd_and_user() -> str:
    """sshd installed, the test user present; the user's new password."""
    if os.geteuid() != 0:
        pytest.fail("the SFTP tests run sshd, which must run as root")
    if not SSHD.exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "openssh-server"], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    try:
        pwd.getpwnam(SFTP_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", SFTP_USER], check=True)
    password = random_secrets.token_urlsafe(18)
    subprocess.run(["chpasswd"], input=f"{SFTP_USER}:{password}\n", text=True, check=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    return password


def _keygen(path: Path, kind: str = "ed25519") -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "pixl-test", "-f", str(path)],
                   check=True)
    return path.read_text(), path.with_suffix(".pub").read_text()


@pytest.fixture(scope="session")
def ssh_server_files(base_settings):
    """Keys and configuration for the session (its folder's parents are world-traversable,
    as the SFTP user needs)."""
    password = _ensure_sshd_and_user()
    folder = base_settings.state_dir / "sshd"
    keys = folder / "keys"
    keys.mkdir(parents=True)
    _, host_public = _keygen(keys / "ssh_host_ed25519_key")
    user_private, user_public = _keygen(keys / "user_key")
    authorized = folder / "authorized_keys"
    authorized.write_text(user_public)
    authorized.chmod(0o644)
    return folder, password, host_public, user_private


@pytest.fixture
def ssh_server(ssh_server_files, tmp_path):
    folder, password, host_public, user_private = ssh_server_files
    port = free_port()
    root = folder / f"root-{port}"
    root.mkdir()
    user = pwd.getpwnam(SFTP_USER)
    os.chown(root, user.pw_uid, user.pw_gid)
    config = folder / f"sshd_config-{port}"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder / "keys" / "ssh_host_ed25519_key"}
PidFile {folder / f"sshd-{port}.pid"}
AuthorizedKeysFile {folder / "authorized_keys"}
StrictModes no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {SFTP_USER}
AllowTcpForwarding no
X11Forwarding no
Subsystem sftp internal-sftp
ForceCommand internal-sftp -d {root}
""")
    server = SshServer(port, root, config, folder / f"sshd-{port}.log", host_public, password,
                       user_private)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def project():
    demo = load_project(REPO_ROOT / "projects" / "demo.yaml", REPO_ROOT / "projects",
                        REPO_ROOT / "tag_rules")
    return dataclasses.replace(demo, dicom_destination="sftp", parquet_destination="sftp")


def _configure(secrets, server: SshServer, *, key: bool = False, host_key: str | None = None):
    values = {"host": "127.0.0.1", "port": str(server.port), "username": SFTP_USER,
              "host-key": host_key or server.host_public_key}
    values["private-key" if key else "password"] = server.user_private_key if key else server.password
    for field, value in values.items():
        secrets.set(f"{ALIAS}--sftp--{field}", value)
    return secrets


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_each_study_arrives_as_one_zip_named_by_its_pseudonymised_uid(
    project, secrets, ssh_server, make_deidentified_study
):
    _configure(secrets, ssh_server)
    studies = [make_deidentified_study(seed=seed) for seed in (1, 2)]

    receipts = [plugins.export_dicom_study(project, s.study, secrets) for s in studies]

    assert _tree(ssh_server.root) == sorted(f"demo/{s.study.pseudo_study_uid}.zip" for s in studies)
    for sent, receipt in zip(studies, receipts, strict=True):
        arrived = (ssh_server.root / "demo" / f"{sent.study.pseudo_study_uid}.zip").read_bytes()
        assert arrived == sent.study.zip_path.read_bytes()
        assert_no_identifying_values(arrived, sent.identifying)
        assert (receipt.destination, receipt.location, receipt.files) == (
            "sftp", f"demo/{sent.study.pseudo_study_uid}.zip", 4)


def test_key_authentication_and_a_repeated_upload_is_success_not_a_copy(
    project, secrets, ssh_server, make_deidentified_study
):
    # The host key as a known_hosts line would give it, after a comment.
    known_hosts = f"# pixl sftp\n[127.0.0.1]:{ssh_server.port} {ssh_server.host_public_key}"
    _configure(secrets, ssh_server, key=True, host_key=known_hosts)
    sent = make_deidentified_study(seed=3)

    first = plugins.export_dicom_study(project, sent.study, secrets)
    again = plugins.export_dicom_study(project, sent.study, secrets)

    assert first == again
    assert _tree(ssh_server.root) == [f"demo/{sent.study.pseudo_study_uid}.zip"]
    assert "Accepted publickey" in ssh_server.log.read_text()


def test_parquet_tree_has_the_ftps_layout_and_a_new_export_replaces_it(
    project, secrets, ssh_server, tmp_path
):
    _configure(secrets, ssh_server)
    tree = tmp_path / "parquet"
    (tree / "omop" / "public" / "omop").mkdir(parents=True)
    (tree / "radiology").mkdir()
    (tree / "omop" / "public" / "omop" / "PROCEDURE_OCCURRENCE.parquet").write_bytes(b"first")
    (tree / "radiology" / "IMAGE_LINKER.parquet").write_bytes(b"linker-1")

    receipt = plugins.export_parquet(project, "2026-11-01t09-00-00", tree, secrets)

    assert (receipt.location, receipt.files) == ("demo/2026-11-01t09-00-00/parquet", 2)
    assert _tree(ssh_server.root) == [
        "demo/2026-11-01t09-00-00/parquet/omop/public/omop/PROCEDURE_OCCURRENCE.parquet",
        "demo/2026-11-01t09-00-00/parquet/radiology/IMAGE_LINKER.parquet",
    ]
    (tree / "radiology" / "IMAGE_LINKER.parquet").write_bytes(b"linker-2")
    (tree / "omop" / "public" / "omop" / "PROCEDURE_OCCURRENCE.parquet").unlink()
    plugins.export_parquet(project, "2026-11-01t09-00-00", tree, secrets)

    assert _tree(ssh_server.root) == ["demo/2026-11-01t09-00-00/parquet/radiology/IMAGE_LINKER.parquet"]
    assert sorted(p.name for p in (ssh_server.root / "demo" / "2026-11-01t09-00-00").iterdir()) == [
        "parquet"]
    linker = ssh_server.root / "demo/2026-11-01t09-00-00/parquet/radiology/IMAGE_LINKER.parquet"
    assert linker.read_bytes() == b"linker-2"


def test_the_server_down_mid_project_is_retryable_and_the_next_try_succeeds(
    project, secrets, ssh_server, make_deidentified_study
):
    _configure(secrets, ssh_server)
    first, second = make_deidentified_study(seed=4), make_deidentified_study(seed=5)
    plugins.export_dicom_study(project, first.study, secrets)

    ssh_server.stop()
    with pytest.raises(DestinationUnavailable, match="server unreachable") as raised:
        plugins.export_dicom_study(project, second.study, secrets)
    assert raised.value.retryable is True

    ssh_server.start()
    plugins.export_dicom_study(project, second.study, secrets)
    assert _tree(ssh_server.root) == sorted(
        f"demo/{s.study.pseudo_study_uid}.zip" for s in (first, second))


def test_nothing_is_visible_under_its_final_name_while_it_is_written(
    project, secrets, ssh_server, make_deidentified_study, tmp_path
):
    """The zip is fed through a FIFO: half of it is sent, then sshd is stopped mid-transfer."""
    _configure(secrets, ssh_server)
    sent = make_deidentified_study(seed=6, series=3, instances=4)
    data = sent.study.zip_path.read_bytes()
    fifo = tmp_path / "study.zip"
    os.mkfifo(fifo)
    partial = ssh_server.root / "demo" / f"{sent.study.pseudo_study_uid}.zip.part"

    def feed() -> None:
        with fifo.open("wb") as pipe:
            pipe.write(data[: len(data) // 2])
            pipe.flush()
            deadline = time.monotonic() + 60
            while not (partial.exists() and partial.stat().st_size > 0):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            ssh_server.stop()  # mid-transfer, its session too: the rest never arrives
            with contextlib.suppress(BrokenPipeError):
                pipe.write(data[len(data) // 2:])  # the reader has given up, or will fail

    feeder = threading.Thread(target=feed)
    feeder.start()
    with pytest.raises(DestinationUnavailable):
        plugins.export_dicom_study(project, ExportableStudy(
            sent.study.pseudo_patient_id, sent.study.pseudo_study_uid, fifo), secrets)
    feeder.join(timeout=60)

    assert not (ssh_server.root / "demo" / f"{sent.study.pseudo_study_uid}.zip").exists()
    ssh_server.start()
    plugins.export_dicom_study(project, sent.study, secrets)  # the retry replaces the part file
    assert _tree(ssh_server.root) == [f"demo/{sent.study.pseudo_study_uid}.zip"]


def test_a_wrong_host_key_is_refused_and_nothing_is_uploaded(
    project, secrets, ssh_server, make_deidentified_study, tmp_path
):
    _, impostor = _keygen(tmp_path / "impostor")
    _configure(secrets, ssh_server, host_key=impostor)

    with pytest.raises(DestinationMisconfigured, match="host key differs") as raised:
        plugins.export_dicom_study(project, make_deidentified_study(seed=7).study, secrets)

    assert raised.value.retryable is False
    assert _tree(ssh_server.root) == []
    assert "Accepted" not in ssh_server.log.read_text()


def test_a_host_key_of_another_type_is_refused_too(
    project, secrets, ssh_server, make_deidentified_study, tmp_path
):
    _, other_type = _keygen(tmp_path / "rsa-key", kind="rsa")
    _configure(secrets, ssh_server, host_key=other_type)

    with pytest.raises(DestinationMisconfigured, match="host key"):
        plugins.export_dicom_study(project, make_deidentified_study(seed=8).study, secrets)
    assert _tree(ssh_server.root) == []


def test_a_wrong_password_is_rejected_without_showing_it(
    project, secrets, ssh_server, make_deidentified_study
):
    _configure(secrets, ssh_server)
    secrets.set(f"{ALIAS}--sftp--password", "not-the-password-1")

    with pytest.raises(DestinationRejected, match="login refused") as raised:
        plugins.export_dicom_study(project, make_deidentified_study(seed=9).study, secrets)
    assert "not-the-password-1" not in str(raised.value) and SFTP_USER not in str(raised.value)


def test_settings_are_checked_and_problems_name_the_secret(project, secrets, ssh_server):
    assert plugins.check_project_destinations(project, secrets) == [
        f"secret '{ALIAS}--sftp--{field}' is not set" for field in ("host", "port", "username",
                                                                   "host-key")
    ]
    _configure(secrets, ssh_server)
    assert plugins.check_project_destinations(project, secrets) == []
    _configure(secrets, ssh_server, host_key="ssh-ed25519 not-base64!")
    assert plugins.check_project_destinations(project, secrets) == [
        "secret 'demo--sftp--host-key', line 1: unreadable ssh-ed25519 key (Error)"]
    _configure(secrets, ssh_server, host_key=f"@revoked 127.0.0.1 {ssh_server.host_public_key}")
    assert plugins.check_project_destinations(project, secrets) == [
        ("secret 'demo--sftp--host-key', line 1: @revoked lines are not supported; "
         "give the server's own public key")]
    _configure(secrets, ssh_server)
    secrets.set(f"{ALIAS}--sftp--private-key", ssh_server.user_private_key)
    assert plugins.check_project_destinations(project, secrets) == [
        ("project demo: set exactly one of secrets 'demo--sftp--password' and "
         "'demo--sftp--private-key'")]
