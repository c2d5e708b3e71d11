"""The corpus test: every third-party DICOM file the suite installs from PyPI (pydicom's
test files, pydicom-data's, deid-data's) through our projects and PIXL's: no identifying
value left in what is kept, and every output a valid file for pydicom and for dcmtk."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections import Counter
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from orthanc_plugins.anon.deid.engine import KEPT, deidentify_instance, load_compiled_project
from orthanc_plugins.anon.deid.writer import dicom_file_bytes
from orthanc_plugins.common.projects import load_all_projects
from orthanc_plugins.common.settings import REPO_ROOT

from .helpers import KEY, PROJECTS_DIR, TAG_RULES_DIR, leak_finder, third_party_files

DCMDUMP = shutil.which("dcmdump")
# PIXL's own configurations, where the suite's fixtures put them (optional here).
PIXL_CONFIGS = REPO_ROOT.parent / "shared" / "fixtures" / "pixl" / "project-configs"


def _run(project, tmp_path: Path, patch: bool) -> Counter[str]:
    """Every file through `project`; outputs checked; the count of each outcome."""
    statuses: Counter[str] = Counter()
    written: list[tuple[Path, str]] = []
    for index, path in enumerate(third_party_files()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = pydicom.dcmread(path, force=True)
            if patch:  # reach the rules with files that lack what a PACS always has
                source.Modality = source.get("Modality") or "OT"
                source.PatientID = source.get("PatientID") or f"CORPUS-{index:04d}"
            first_leak = leak_finder(source)
            result = deidentify_instance(source, project, KEY)
            statuses[result.status] += 1
            if result.status != KEPT:
                continue
            data = dicom_file_bytes(result.dataset)
            out = pydicom.dcmread(BytesIO(data))  # no force: a valid Part 10 file
            out.decode()
        leak = first_leak(out)
        assert leak is None, f"{path.name} through {project.slug}: {leak} keeps a source value"
        target = tmp_path / f"{index:04d}.dcm"
        target.write_bytes(data)
        written.append((target, path.name))
    _assert_dcmtk_reads(written)
    return statuses


def _assert_dcmtk_reads(written: list[tuple[Path, str]]) -> None:
    if DCMDUMP is None:
        pytest.fail("dcmdump (dcmtk) is missing: apt-get install dcmtk")
    for start in range(0, len(written), 50):
        batch = written[start:start + 50]
        done = subprocess.run([DCMDUMP, "+E", "-q", *(str(p) for p, _ in batch)], check=False,
                              capture_output=True, text=True, errors="replace", timeout=300)
        errors = [line for line in done.stderr.splitlines() if line.startswith(("E:", "F:"))]
        if done.returncode != 0 or errors:
            for path, name in batch:  # which file
                one = subprocess.run([DCMDUMP, "+E", "-q", str(path)], check=False,
                                     capture_output=True, text=True, errors="replace", timeout=60)
                assert one.returncode == 0 and not any(
                    line.startswith(("E:", "F:")) for line in one.stderr.splitlines()), \
                    f"dcmdump rejects the output of {name}: {one.stderr[:300]}"


def test_corpus_through_our_projects(tmp_path, permissive) -> None:
    assert len(third_party_files()) >= 150  # pydicom, pydicom-data and deid-data files
    demo = load_compiled_project("demo", PROJECTS_DIR, TAG_RULES_DIR)
    for project in load_all_projects(PROJECTS_DIR, TAG_RULES_DIR).values():
        compiled = demo if project.slug == "demo" else load_compiled_project(
            project.slug, PROJECTS_DIR, TAG_RULES_DIR)
        folder = tmp_path / project.slug
        folder.mkdir()
        _run(compiled, folder, patch=False)
    folder = tmp_path / "permissive"
    folder.mkdir()
    statuses = _run(permissive, folder, patch=True)
    assert statuses[KEPT] >= 150, statuses


def test_corpus_through_pixl_projects(tmp_path) -> None:
    configs = PIXL_CONFIGS
    if not configs.is_dir():
        pytest.skip(f"PIXL's project configurations are not at {configs}")
    kept = 0
    for slug in sorted(load_all_projects(configs, configs / "tag-operations")):
        project = load_compiled_project(slug, configs, configs / "tag-operations")
        folder = tmp_path / slug
        folder.mkdir()
        kept += _run(project, folder, patch=True)[KEPT]
    assert kept >= 50
