"""anon's compiled projects follow the files on disk: an edited project or tag-rule
file takes effect for the next study, without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orthanc_plugins.anon.deid.engine import CompiledProjects
from orthanc_plugins.common.projects import ProjectConfigError

from .helpers import TAG_RULES_DIR, write_project

EXPOSURE_TIME = 0x00181150  # kept by tag_rules/ct.yaml
PROJECT_BODY = """  modalities: ["CT"]
tag_operation_files:
  base: ["base.yaml", "ct.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: {minimum}
destination: {{dicom: "none", parquet: "none"}}
"""


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    projects, rules = tmp_path / "projects", tmp_path / "tag_rules"
    shutil.copytree(TAG_RULES_DIR, rules)
    write_project(projects, "reload", PROJECT_BODY.format(minimum=1))
    return projects, rules


def test_a_project_is_compiled_once_while_its_files_stay_as_they_are(folders) -> None:
    compiled = CompiledProjects(*folders)
    assert compiled.get("reload") is compiled.get("reload")


def test_an_edited_project_file_takes_effect_for_the_next_study(folders) -> None:
    projects, _ = folders
    compiled = CompiledProjects(*folders)
    assert compiled.get("reload").config.min_instances_per_series == 1
    write_project(projects, "reload", PROJECT_BODY.format(minimum=30))
    assert compiled.get("reload").config.min_instances_per_series == 30


def test_an_edited_tag_rule_file_takes_effect_for_the_next_study(folders) -> None:
    _, rules = folders
    compiled = CompiledProjects(*folders)
    assert EXPOSURE_TIME in compiled.get("reload").tag_rules.base
    ct = rules / "ct.yaml"
    ct.write_text("".join(line for line in ct.read_text().splitlines(keepends=True)
                          if "Exposure Time" not in line))
    assert EXPOSURE_TIME not in compiled.get("reload").tag_rules.base


def test_a_project_file_broken_by_an_edit_stops_the_next_study(folders) -> None:
    """Never the old rules in its place: the study waits for the file to be mended."""
    projects, _ = folders
    compiled = CompiledProjects(*folders)
    compiled.get("reload")
    (projects / "reload.yaml").write_text("project: [unclosed\n")
    with pytest.raises(ProjectConfigError, match="reload.yaml"):
        compiled.get("reload")
