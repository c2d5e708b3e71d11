"""The plugin manager: built-in and third-party destinations, checks, dispatch, tracing."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from destination_support import install_example_package

from pixl_hooks import plugins
from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import DestinationInfo, DestinationMisconfigured, UnknownDestination


@pytest.fixture
def project(load_fixture_project):
    return load_fixture_project("test-extract-uclh-omop-cdm")


def test_built_in_destinations_are_listed_with_their_hooks():
    listing = plugins.list_destinations(plugins.make_plugin_manager())

    assert [(d["name"], d["module"], d["dicom"], d["parquet"]) for d in listing] == [
        ("dicomweb", "pixl_hooks.destinations.dicomweb", True, False),
        ("ftpes", "pixl_hooks.destinations.ftps", True, True),
        ("ftps", "pixl_hooks.destinations.ftps", True, True),
        ("none", "pixl_hooks.destinations.none", True, True),
        ("sftp", "pixl_hooks.destinations.sftp", True, True),
        ("xnat", "pixl_hooks.destinations.xnat", True, False),
    ]
    hooks = {d["name"]: d["hooks"] for d in listing}
    assert hooks["ftps"] == ["pixl_check_destination", "pixl_destinations",
                             "pixl_export_dicom_study", "pixl_export_parquet"]
    assert "pixl_export_parquet" not in hooks["xnat"]


def test_an_unknown_destination_is_a_clear_problem(project, secrets, make_deidentified_study):
    typo = dataclasses.replace(project, dicom_destination="ftsp", parquet_destination="none")

    assert plugins.check_project_destinations(typo, secrets) == [
        ("destination.dicom: no installed plugin provides destination 'ftsp' "
         "(known: dicomweb, ftpes, ftps, none, sftp, xnat)")
    ]
    with pytest.raises(UnknownDestination, match="'ftsp'"):
        plugins.export_dicom_study(typo, make_deidentified_study().study, secrets)


def test_a_destination_that_cannot_take_parquet_is_refused(project, secrets, tmp_path):
    wrong = dataclasses.replace(project, dicom_destination="none", parquet_destination="xnat")

    assert plugins.check_project_destinations(wrong, secrets) == [
        "destination.parquet: destination 'xnat' cannot receive parquet files"
    ]
    with pytest.raises(DestinationMisconfigured, match="cannot receive parquet files"):
        plugins.export_parquet(wrong, "2023-12-07t14-08-58", tmp_path, secrets)


def test_destination_none_uploads_nothing_and_counts(project, secrets, make_deidentified_study):
    none = dataclasses.replace(project, dicom_destination="none", parquet_destination="none")
    sent = make_deidentified_study(series=3, instances=2)

    receipt = plugins.export_dicom_study(none, sent.study, secrets)

    assert (receipt.destination, receipt.location, receipt.files) == ("none", None, 6)
    assert plugins.check_project_destinations(none, secrets) == []


def test_two_plugins_claiming_one_name_is_an_error():
    class Impostor:
        @hookimpl
        def pixl_destinations(self):
            return [DestinationInfo("ftps", dicom=True, parquet=False)]

    manager = plugins.make_plugin_manager()
    manager.register(Impostor(), name="impostor")

    with pytest.raises(DestinationMisconfigured,
                       match="'ftps' is provided by both pixl_hooks.destinations.ftps and impostor"):
        plugins.list_destinations(manager)


def test_tracing_logs_hook_calls_with_pseudonyms_only(
    project, secrets, make_deidentified_study, monkeypatch, caplog
):
    none = dataclasses.replace(project, dicom_destination="none")
    secrets.set("test--ftp--password", "never-in-a-trace")
    sent = make_deidentified_study()
    caplog.set_level(logging.INFO, logger="pixl_hooks.trace")

    plugins.export_dicom_study(none, sent.study, secrets, plugins.make_plugin_manager())
    assert "hook pixl_export_dicom_study" not in caplog.text  # off by default

    monkeypatch.setenv("PIXL_TRACE_HOOKS", "1")
    plugins.export_dicom_study(none, sent.study, secrets, plugins.make_plugin_manager())

    assert (
        f"hook pixl_export_dicom_study(destination_name='none', project=<project {project.slug}>, "
        f"secrets=<FileSecrets>, study=<study {sent.study.pseudo_study_uid}>)"
    ) in caplog.text
    assert "hook pixl_export_dicom_study returned ExportReceipt(destination='none'" in caplog.text
    assert "never-in-a-trace" not in caplog.text and str(secrets.path) not in caplog.text


def test_a_pip_installed_third_party_destination_is_found_and_exported_through(
    project, secrets, make_deidentified_study, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(install_example_package(tmp_path)))
    manager = plugins.make_plugin_manager()
    example = dataclasses.replace(
        project, dicom_destination="example-folder", parquet_destination="none"
    )
    sent = make_deidentified_study()

    listed = {d["name"]: d for d in plugins.list_destinations(manager)}
    assert listed["example-folder"]["module"] == "pixl_example_destination"
    assert plugins.check_project_destinations(example, secrets, manager) == [
        "secret 'test--example--folder' is not set"
    ]
    secrets.set("test--example--folder", str(tmp_path / "received"))
    receipt = plugins.export_dicom_study(example, sent.study, secrets, manager)

    arrived = tmp_path / "received" / project.slug / f"{sent.study.pseudo_study_uid}.zip"
    assert arrived.read_bytes() == sent.study.zip_path.read_bytes()
    assert (receipt.destination, receipt.files) == ("example-folder", 4)
