"""The `ftps` destination against a real FTPS server (pyftpdlib, TLS required)."""

from __future__ import annotations

import dataclasses
import ftplib
import socket
import ssl
import zipfile

import pytest
from destination_support import (
    FTPS_PASSWORD,
    FTPS_USER,
    assert_no_identifying_values,
    free_port,
    set_ftps_secrets,
    start_ftps_server,
    stop_process,
)

from pixl_hooks import plugins
from pixl_hooks.destinations.ftps import ImplicitFtpTls
from pixl_hooks.types import (
    DestinationMisconfigured,
    DestinationRejected,
    DestinationUnavailable,
)

PROJECT = "test-extract-uclh-omop-cdm"  # destination ftps/ftps, azure_kv_alias "test"


@pytest.fixture
def project(load_fixture_project):
    return load_fixture_project(PROJECT)


@pytest.fixture
def configured(secrets, ftps_server, tls_files):
    set_ftps_secrets(secrets, "test", ftps_server, tls_files)
    return secrets


def zip_members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_each_study_arrives_as_one_zip_named_by_its_pseudonymised_uid(
    project, configured, ftps_server, make_deidentified_study
):
    studies = [make_deidentified_study(seed=seed) for seed in (1, 2)]

    receipts = [plugins.export_dicom_study(project, s.study, configured) for s in studies]

    folder = ftps_server.root / project.slug
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{s.study.pseudo_study_uid}.zip" for s in studies
    )
    for sent, receipt in zip(studies, receipts):
        arrived = folder / f"{sent.study.pseudo_study_uid}.zip"
        assert zip_members(arrived) == zip_members(sent.study.zip_path)
        assert len(zip_members(arrived)) == 4 == receipt.files
        assert receipt.location == f"{project.slug}/{sent.study.pseudo_study_uid}.zip"
        assert_no_identifying_values(arrived.read_bytes(), sent.identifying)
        for member in zip_members(arrived).values():
            assert_no_identifying_values(member, sent.identifying)


def test_exporting_a_study_again_replaces_it(project, configured, ftps_server, make_deidentified_study):
    sent = make_deidentified_study(seed=3)
    plugins.export_dicom_study(project, sent.study, configured)
    plugins.export_dicom_study(project, sent.study, configured)

    names = [p.name for p in (ftps_server.root / project.slug).iterdir()]
    assert names == [f"{sent.study.pseudo_study_uid}.zip"]


def test_destination_down_is_a_retryable_error(project, secrets, ftps_server, tls_files, make_deidentified_study):
    set_ftps_secrets(secrets, "test", ftps_server, tls_files)
    secrets.set("test--ftp--port", str(free_port()))  # nothing listens there

    with pytest.raises(DestinationUnavailable) as caught:
        plugins.export_dicom_study(project, make_deidentified_study().study, secrets)

    assert caught.value.retryable
    assert "unreachable" in str(caught.value)


def test_destination_stopped_mid_project_is_retryable(
    project, configured, ftps_server, make_deidentified_study
):
    plugins.export_dicom_study(project, make_deidentified_study(seed=1).study, configured)
    ftps_server.process.terminate()
    ftps_server.process.wait(timeout=10)

    with pytest.raises(DestinationUnavailable):
        plugins.export_dicom_study(project, make_deidentified_study(seed=2).study, configured)


def test_wrong_password_is_rejected_without_showing_it(project, configured, make_deidentified_study):
    configured.set("test--ftp--password", "not-the-password-xyz")

    with pytest.raises(DestinationRejected) as caught:
        plugins.export_dicom_study(project, make_deidentified_study().study, configured)

    assert not caught.value.retryable
    assert "login refused" in str(caught.value)
    message = repr(caught.value) + str(caught.value.__cause__) + str(caught.value.__context__)
    assert "not-the-password-xyz" not in message and FTPS_USER not in message


def test_an_untrusted_certificate_is_refused(project, configured, make_deidentified_study):
    configured.set("test--ftp--ca-cert", "")  # falls back to the system's CAs only

    with pytest.raises(DestinationMisconfigured, match="certificate is not trusted"):
        plugins.export_dicom_study(project, make_deidentified_study().study, configured)


def test_missing_settings_name_the_secret(project, secrets, make_deidentified_study):
    with pytest.raises(DestinationMisconfigured, match="'test--ftp--host' is not set"):
        plugins.export_dicom_study(project, make_deidentified_study().study, secrets)

    problems = plugins.check_project_destinations(project, secrets)
    assert problems == [f"secret 'test--ftp--{field}' is not set"
                        for field in ("host", "port", "username", "password")]


def test_check_passes_when_configured(project, configured):
    assert plugins.check_project_destinations(project, configured) == []


def test_parquet_tree_is_uploaded_under_slug_extract_parquet_and_replaced(
    project, configured, ftps_server, tmp_path
):
    tree = tmp_path / "tree"
    (tree / "omop" / "public" / "omop").mkdir(parents=True)
    (tree / "radiology").mkdir()
    (tree / "omop" / "public" / "omop" / "PROCEDURE_OCCURRENCE.parquet").write_bytes(b"first")
    (tree / "radiology" / "IMAGE_LINKER.parquet").write_bytes(b"linker-1")

    receipt = plugins.export_parquet(project, "2023-12-07t14-08-58", tree, configured)

    remote = ftps_server.root / project.slug / "2023-12-07t14-08-58"
    assert receipt.location == f"{project.slug}/2023-12-07t14-08-58/parquet"
    assert receipt.files == 2
    assert (remote / "parquet/omop/public/omop/PROCEDURE_OCCURRENCE.parquet").read_bytes() == b"first"
    assert (remote / "parquet/radiology/IMAGE_LINKER.parquet").read_bytes() == b"linker-1"

    (tree / "radiology" / "IMAGE_LINKER.parquet").write_bytes(b"linker-2")
    (tree / "omop" / "public" / "omop" / "PROCEDURE_OCCURRENCE.parquet").unlink()
    plugins.export_parquet(project, "2023-12-07t14-08-58", tree, configured)

    assert sorted(p.name for p in remote.iterdir()) == ["parquet"]
    files = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())
    assert files == ["parquet/radiology/IMAGE_LINKER.parquet"]
    assert (remote / "parquet/radiology/IMAGE_LINKER.parquet").read_bytes() == b"linker-2"


@pytest.fixture
def explicit_server(tmp_path, tls_files):
    server = start_ftps_server(tmp_path / "explicit", tls_files, mode="explicit")
    yield server
    stop_process(server.process)


def test_ftpes_speaks_explicit_tls(project, secrets, explicit_server, tls_files, make_deidentified_study):
    set_ftps_secrets(secrets, "test", explicit_server, tls_files)
    ftpes = dataclasses.replace(project, dicom_destination="ftpes", parquet_destination="ftpes")
    sent = make_deidentified_study(seed=4)

    receipt = plugins.export_dicom_study(ftpes, sent.study, secrets)

    arrived = explicit_server.root / project.slug / f"{sent.study.pseudo_study_uid}.zip"
    assert arrived.read_bytes() == sent.study.zip_path.read_bytes()
    assert receipt.destination == "ftpes"
    # and the implicit-TLS client cannot talk to it (nor the other way round)
    with pytest.raises(DestinationUnavailable):
        plugins.export_dicom_study(project, sent.study, secrets)


def test_the_explicit_server_refuses_plain_ftp_logins(explicit_server):
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", explicit_server.port, timeout=10)
    try:
        with pytest.raises(ftplib.error_perm, match="^550"):
            ftp.login(FTPS_USER, FTPS_PASSWORD)
    finally:
        ftp.close()


def test_the_implicit_server_says_nothing_in_clear(ftps_server):
    with (socket.create_connection(("127.0.0.1", ftps_server.port), timeout=1) as plain,
          pytest.raises(TimeoutError)):
        plain.recv(100)  # it waits for a TLS handshake; no banner in clear


def test_the_implicit_server_accepts_tls_with_its_certificate(ftps_server, tls_files):
    ftp = ImplicitFtpTls(context=ssl.create_default_context(cadata=tls_files.pem), timeout=10)
    ftp.connect("127.0.0.1", ftps_server.port)
    ftp.login(FTPS_USER, FTPS_PASSWORD)
    ftp.prot_p()
    assert ftp.nlst() == []
    ftp.quit()
