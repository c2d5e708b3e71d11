"""The report of the demo extract: written by `pixl-tui report`, holding no identifier,
and looked at in headless Chromium (Debian's chromium) like its reader would."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack import demo, studygen
from pixl_stack.stack import Stack
from tui import exit_codes
from tui.cli import main

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def demo_run(base_settings, extra_stack_settings):
    settings = extra_stack_settings(
        base_settings, 2, base_settings.state_dir / "demo-report-stack",
        projects_dir=REPO_ROOT / "projects", tag_rules_dir=REPO_ROOT / "tag_rules",
    )
    try:
        statuses = demo.run_demo(settings, say=lambda _line: None)
        yield settings, next(s for s in statuses if s.project == demo.OMOP_PROJECT)
    finally:
        Stack(settings).down()


@pytest.fixture
def written_report(demo_run, tmp_path, monkeypatch, capsys):
    settings, status = demo_run
    monkeypatch.setenv("ORTHANC_USERNAME", settings.orthanc_username)
    monkeypatch.setenv("ORTHANC_PASSWORD", settings.orthanc_password)
    code = main(["--url", settings.raw.url, "report", status.project, status.extract, "--output", str(tmp_path)])
    assert code == exit_codes.OK
    out = capsys.readouterr().out
    stem = tmp_path / f"{status.project}-{status.extract}-report"
    assert str(stem.with_suffix(".html")) in out
    return stem.with_suffix(".html"), json.loads(stem.with_suffix(".json").read_text())


def test_the_report_says_what_happened_to_the_demo_extract(written_report):
    _, report = written_report
    assert report["studies"] == {
        "requested": 7, "found": 6, "not_found": 1, "retrieved": 6, "exported": 5, "failed": 0,
        "skipped": 1, "on_their_way": 0,
    }
    assert report["destinations"] == {"dicom": "ftps", "parquet": "ftps"}
    assert [e["state"] for e in report["parquet_exports"]] == ["done"]
    dropped = {r["reason"] for r in report["instance_reasons"]["dropped"]}
    assert any("scout" in reason.lower() for reason in dropped), dropped
    assert report["instance_reasons"]["quarantined"]
    assert report["instances"]["received"] == sum(
        report["instances"][k] for k in ("kept", "dropped", "quarantined"))
    assert [f["state"] for f in report["failures"]] == ["not_found"]
    assert report["progress"][-1]["finished"] == 7 and report["progress"][-1]["exported"] == 5


def test_the_report_holds_no_identifier(written_report, tmp_path):
    html_path, report = written_report
    cohort = demo.build_cohort(tmp_path / "cohort")  # deterministic: the demo's own studies
    identifiers = set()
    for study in cohort.studies:
        identifiers |= studygen.identifying_values(study.patient, study.accession)
        identifiers |= {study.study_uid, study.patient.mrn, study.accession}
    text = html_path.read_text() + json.dumps(report)
    leaked = sorted(v for v in identifiers if len(v) > 3 and v in text)
    assert not leaked


def test_the_html_report_renders_in_headless_chromium(written_report, tmp_path):
    assert CHROMIUM, "Debian's chromium is missing: make bootstrap installs it"
    html_path, _ = written_report
    screenshot = tmp_path / "report.png"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              # Self-contained: nothing may be fetched while it renders.
              "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1100,2000"]
    dom = subprocess.run([*common, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "<polyline" in dom and "Studies finished and exported over time" in dom
    assert "Failures and their reasons" in dom and "not_found" in dom
    subprocess.run([*common, f"--screenshot={screenshot}", html_path.as_uri()], capture_output=True,
                   timeout=120, check=True)
    png = screenshot.read_bytes()
    # A blank page compresses to a few KB; text, tables and the chart do not.
    # (pytest keeps tmp_path of the last runs: look at report.png there.)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 40_000
