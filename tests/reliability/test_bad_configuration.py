"""Bad project and tag-operation files, on copies of the repository's own: each is one
`ProjectConfigError` naming the file and the key, and the project is not used (raw
refuses extracts for it)."""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from pathlib import Path

import pytest

from orthanc_plugins.anon.deid.engine import load_compiled_project
from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.projects import ProjectConfigError
from orthanc_plugins.common.settings import REPO_ROOT
from orthanc_plugins.raw.extracts import ExtractError, queue_extract, read_omop_extract
from pixl_stack.omop import Procedure, write_omop_extract


@pytest.fixture
def copies(tmp_path) -> tuple[Path, Path]:
    projects = shutil.copytree(REPO_ROOT / "projects", tmp_path / "projects")
    rules = shutil.copytree(REPO_ROOT / "tag_rules", tmp_path / "tag_rules")
    return projects, rules


def _edit(path: Path, old: str | None, new: str) -> None:
    """Replace `old` by `new` in the file, or the whole file by `new` when old is None."""
    if old is None:
        path.write_text(new)
        return
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


BREAKS = {
    "malformed project YAML": (
        "projects/demo.yaml", 'name: "demo"', 'name: "demo\n  : [', "projects/demo.yaml",
        "(file)", "is not valid YAML"),
    "malformed tag file YAML": (
        "tag_rules/ct.yaml", "- {", "- {{[", "tag_rules/ct.yaml", "(file)", "is not valid YAML"),
    "unknown tag operation": (
        "tag_rules/base.yaml", "element: 0x0005, op: keep}", "element: 0x0005, op: blur}",
        "tag_rules/base.yaml", "[0].op", "unknown operation 'blur'"),
    "missing tag file": (
        "projects/demo.yaml", '- "ct.yaml"', '- "no-such-file.yaml"', "projects/demo.yaml",
        "tag_operation_files.base[1]", "'no-such-file.yaml' not found"),
    "tag file not a list": (
        "tag_rules/mr.yaml", None, "colour: blue\n", "tag_rules/mr.yaml", "(file)",
        "must be a YAML list of tag entries"),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_a_broken_configuration_is_one_error_naming_file_and_key(copies, tmp_path, broken):
    file, old, new, shown, key, problem = BREAKS[broken]
    projects, rules = copies
    _edit(tmp_path / file, old, new)

    with pytest.raises(ProjectConfigError) as caught:
        load_compiled_project("demo", projects, rules)

    assert (caught.value.path, caught.value.key) == (tmp_path / shown, key)
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{tmp_path / shown}: ")


def test_raw_refuses_an_extract_of_a_project_whose_file_is_broken(copies, tmp_path, pixl_settings):
    projects, rules = copies
    _edit(projects / "demo.yaml", 'name: "demo"', 'name: "demo\n  : [')
    settings = dataclasses.replace(pixl_settings, projects_dir=projects, tag_rules_dir=rules)
    folder = write_omop_extract(tmp_path / "extract", "demo", datetime.datetime(2030, 1, 1),
                                [Procedure(1, "MRN-1", "ACC-1", "1.2.3", datetime.date(2020, 1, 1))])
    with pixl_db.connect(settings, autocommit=True) as conn:
        with pytest.raises(ExtractError, match="project 'demo' has an invalid configuration"):
            queue_extract(conn, settings, read_omop_extract(folder))
        assert conn.execute("SELECT count(*) FROM extracts").fetchone()[0] == 0
