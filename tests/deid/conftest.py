"""Fixtures of the de-identification tests."""

from __future__ import annotations

import pytest

from orthanc_plugins.anon.deid.engine import CompiledProject, load_compiled_project

from .helpers import PROJECTS_DIR, TAG_RULES_DIR, write_project


@pytest.fixture(scope="session")
def demo() -> CompiledProject:
    """Our demo project, with the repository's own tag rules."""
    return load_compiled_project("demo", PROJECTS_DIR, TAG_RULES_DIR)


@pytest.fixture(scope="session")
def permissive(tmp_path_factory) -> CompiledProject:
    """Our rules, every modality, every manufacturer, burned-in risks allowed: for third-party
    files, where the rules, the leak guard and the writer are what is under test."""
    folder = tmp_path_factory.mktemp("projects")
    write_project(folder, "third-party", """  modalities: ["CT", "MR", "CR", "DX", "US", "PT", "OT", "NM", "XA", "MG", "RTDOSE",
                 "RTPLAN", "RTSTRUCT", "RTIMAGE", "SR", "ECG", "SC", "KO", "PR", "SEG"]
tag_operation_files:
  base: ["base.yaml", "ct.yaml", "mr.yaml", "xray.yaml", "us.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
burned_in_text: {allow_burned_in_annotation: true, allow_secondary_capture: true, allow_screen_save: true,
                 allow_modalities: ["US", "OT", "SC", "XA", "ECG", "SM", "RF", "ES", "XC"]}
destination: {dicom: "none", parquet: "none"}
""")
    return load_compiled_project("third-party", folder, TAG_RULES_DIR)
