"""The FTPS destination when its server is killed mid-upload and restarted later: the
study is sent again and ends at the destination exactly once, nothing half-visible;
counted from the server's own upload log, not only from the files left."""

from __future__ import annotations

import ftplib
import os
import signal
import threading
from pathlib import Path

import pytest
from destination_support import (
    TlsFiles,
    make_deidentified_study,
    set_ftps_secrets,
    start_ftps_server,
    stop_process,
)

from orthanc_plugins.common.secrets import FileSecrets
from pixl_hooks import plugins
from pixl_hooks.types import DestinationUnavailable
from pixl_stack.certs import make_self_signed_cert


class _PausingReader:
    """A file whose reader stops after `after` bytes until released: the upload is then
    certainly in progress when the test acts."""

    def __init__(self, handle, after: int, reached: threading.Event, release: threading.Event):
        self.handle, self.after = handle, after
        self.reached, self.release = reached, release
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.after and not self.release.is_set():
            self.reached.set()
            self.release.wait(30)
        data = self.handle.read(size)
        self.sent += len(data)
        return data


@pytest.fixture
def tls(tmp_path) -> TlsFiles:
    return TlsFiles(*make_self_signed_cert(tmp_path / "cert.pem", tmp_path / "key.pem"))


def test_server_killed_mid_upload_then_back_ends_with_the_study_exactly_once(
    tmp_path: Path, tls, repo_project, monkeypatch
):
    project = repo_project("demo")  # destination ftps
    secrets = FileSecrets(tmp_path / "secrets.json")
    server = start_ftps_server(tmp_path / "ftps", tls)
    set_ftps_secrets(secrets, project.secret_alias, server, tls)
    sent = make_deidentified_study(tmp_path / "studies", seed=41, series=3, instances=10).study
    reached, release = threading.Event(), threading.Event()
    storbinary = ftplib.FTP_TLS.storbinary

    def paused_storbinary(self, cmd, fp, *args, **kwargs):
        return storbinary(self, cmd, _PausingReader(fp, 16 * 1024, reached, release), *args, **kwargs)

    monkeypatch.setattr(ftplib.FTP_TLS, "storbinary", paused_storbinary)
    outcome: list[BaseException | None] = []

    def export() -> None:
        try:
            plugins.export_dicom_study(project, sent, secrets)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    exporting = threading.Thread(target=export)
    exporting.start()
    try:
        assert reached.wait(30), "the upload never started"
        os.killpg(server.process.pid, signal.SIGKILL)  # mid-upload, no goodbye
        server.process.wait(10)
    finally:
        release.set()
        exporting.join(60)
    [error] = outcome
    assert isinstance(error, DestinationUnavailable) and error.retryable
    folder = server.root / project.slug
    assert not (folder / f"{sent.pseudo_study_uid}.zip").exists()  # nothing half-visible

    restarted = start_ftps_server(tmp_path / "ftps", tls, port=server.port)
    try:
        release.set()
        receipt = plugins.export_dicom_study(project, sent, secrets)  # the retry
    finally:
        stop_process(restarted.process)

    assert receipt.location == f"{project.slug}/{sent.pseudo_study_uid}.zip"
    assert sorted(p.name for p in folder.iterdir()) == [f"{sent.pseudo_study_uid}.zip"]
    assert (folder / f"{sent.pseudo_study_uid}.zip").read_bytes() == sent.zip_path.read_bytes()
    final = f"{project.slug}/{sent.pseudo_study_uid}.zip"
    log = restarted.uploads()
    assert [r.event for r in log] == ["received", "renamed"]
    assert [r.path for r in log if r.event == "renamed"] == [final]  # exactly once
    assert log[0].bytes == sent.zip_path.stat().st_size
