"""`make demo` end to end, on a stack of its own: what it promises, it does (twice)."""

from __future__ import annotations

import io
import zipfile

import pyarrow.parquet as pq
import pydicom
import pytest

from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack import demo, studygen
from pixl_stack.stack import Stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def demo_stack(base_settings, extra_stack_settings):
    state = base_settings.state_dir / "demo-stack"
    settings = extra_stack_settings(
        base_settings, 2, state,
        projects_dir=REPO_ROOT / "projects", tag_rules_dir=REPO_ROOT / "tag_rules",
    )
    lines: list[str] = []
    try:
        statuses = demo.run_demo(settings, say=lines.append)
        yield settings, statuses, lines
    finally:
        Stack(settings).down()


def _counts(statuses, project):
    return next(s.counts for s in statuses if s.project == project)


def test_the_demo_exports_what_it_should_and_says_what_it_filtered(demo_stack):
    settings, statuses, lines = demo_stack
    assert _counts(statuses, "demo") == {"exported": 5, "not_found": 1, "skipped": 1}
    assert _counts(statuses, "demo-dicomweb") == {"exported": 3}
    summary = "\n".join(lines)
    assert "5 study zips" in summary
    assert "DICOMweb" in summary and ": 3 studies" in summary
    assert "burned" in summary.lower()  # the quarantined DX, with its reason
    assert "Scout" in summary or "scout" in summary  # the dropped series, with its reason


def test_no_identifying_value_reaches_the_ftps_destination(demo_stack):
    settings, _, _ = demo_stack
    zips = sorted((Stack(settings).ftps_root / "demo").glob("*.zip"))
    assert len(zips) == 5
    forbidden = set()
    for spec in (d.spec for d in demo.DEMO_STUDIES):
        patient = studygen.make_patient(spec.seed)
        forbidden |= studygen.identifying_values(patient, studygen.default_accession(spec.seed, patient))
    forbidden = {value for value in forbidden if len(value) >= 4}
    instances = 0
    for path in zips:
        assert path.stem.startswith("2.25.")  # named by the pseudonymised study UID
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                data = archive.read(name)
                ds = pydicom.dcmread(io.BytesIO(data))
                assert ds.StudyInstanceUID == path.stem
                assert ds.PatientIdentityRemoved == "YES"
                text = data.decode("latin-1")
                leaked = [value for value in forbidden if value in text]
                assert leaked == [], f"{path.name}/{name} holds identifying values"
                instances += 1
    assert instances > 0


def test_the_parquet_export_links_every_exported_study(demo_stack):
    settings, _, _ = demo_stack
    linker = settings.export_root / "demo" / "all_extracts" / "2026-11-01t09-00-00" / "radiology" / "IMAGE_LINKER.parquet"
    table = pq.read_table(linker).to_pylist()
    assert len(table) == 5
    uploaded = Stack(settings).ftps_root / "demo" / "2026-11-01t09-00-00" / "parquet" / "radiology" / "IMAGE_LINKER.parquet"
    assert pq.read_table(uploaded).to_pylist() == table


def test_running_the_demo_again_exports_nothing_twice(demo_stack):
    settings, _, _ = demo_stack
    ftps = Stack(settings).ftps_root / "demo"
    before = {path.name: path.stat().st_mtime_ns for path in ftps.glob("*.zip")}
    lines: list[str] = []
    statuses = demo.run_demo(settings, say=lines.append)
    after = {path.name: path.stat().st_mtime_ns for path in ftps.glob("*.zip")}
    assert after == before
    assert _counts(statuses, "demo") == {"exported": 5, "not_found": 1, "skipped": 1}
    assert any("queued 0 new studies" in line for line in lines)
    assert any("already exported" in line and "not again" in line for line in lines)
