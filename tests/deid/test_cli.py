"""pixl-deid: de-identify local files with a project's rules and write a review report."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from orthanc_plugins.anon.deid.cli import main
from pixl_stack.studygen import StudySpec, generate_study, make_patient, write_study

from .helpers import KEY, PROJECTS_DIR


def _inputs(tmp_path: Path) -> Path:
    patient = make_patient(31)
    folder = tmp_path / "in"
    write_study(generate_study(StudySpec(series=2, instances_per_series=2, secondary_capture=True),
                               patient), folder / "ct")
    write_study(generate_study(StudySpec(series=1, instances_per_series=1,
                                         series_descriptions=["Scout"], seed=4), patient), folder / "scout")
    (folder / "notes.txt").write_text("not dicom")
    return folder


def test_demo_project_run_writes_outputs_and_a_report(tmp_path, capsys) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY.decode())
    out = tmp_path / "out"
    assert main(["--project", "demo", "--key-file", str(key_file), "--output", str(out),
                 str(_inputs(tmp_path))]) == 0
    assert "kept=4 dropped=1 quarantined=1 skipped=1" in capsys.readouterr().out
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 4
    for path in written:
        ds = pydicom.dcmread(path)
        assert path.stem == ds.SOPInstanceUID and path.parent.name == ds.SeriesInstanceUID
    report = json.loads((out / "report.json").read_text())
    reasons = sorted(f["reason"] for f in report["files"] if f["status"] != "kept")
    assert reasons[0].startswith("burned-in text risk")
    assert reasons[1] == "not a DICOM Part 10 file"
    assert "series filter 'scout'" in reasons[2]
    # Inputs are named by number and content hash: a folder or file name can be a patient's.
    texts = (out / "report.json").read_text() + (out / "report.md").read_text()
    assert str(tmp_path / "in") not in texts and "notes.txt" not in texts
    assert all(f["input"].startswith("#") for f in report["files"])
    assert all(f["validation"]["passed"] for f in report["files"] if f["status"] == "kept")
    tags = {entry["tag"]: entry["outcomes"] for entry in report["tags"]}
    assert tags["(0010,0010) PatientName"][0]["action"] == "replaced with a dummy value"
    assert tags["(0008,1030) StudyDescription"][0]["why"] == "not in the allow-list"
    markdown = (out / "report.md").read_text()
    assert "| (0008,0020) StudyDate | date shifted | date-shift (base.yaml) | 4 |" in markdown


def test_pixl_configs_work_and_min_instances_applies(tmp_path, pixl_format_inputs, monkeypatch,
                                                     capsys) -> None:
    configs = pixl_format_inputs / "project-configs"
    folder = tmp_path / "in"
    datasets = generate_study(StudySpec(manufacturer="GE MEDICAL SYSTEMS", series=2,
                                        instances_per_series=2), make_patient(2))
    for ds in datasets:
        # despiad's rules keep these; the leak guard would (rightly) quarantine the generated ones.
        ds.StudyDescription = "CT CHEST"
        ds.PatientBirthDate = ""
    write_study(datasets, folder)
    monkeypatch.setenv("PIXL_DEID_KEY", KEY.decode())
    out = tmp_path / "out"
    code = main(["--project", "despiad", "--projects-dir", str(configs),
                 "--tag-rules-dir", str(configs / "tag-operations"), "--output", str(out), str(folder)])
    assert code == 0
    assert "kept=4" in capsys.readouterr().out  # despiad: min_instances_per_series 2
    (folder / "001-0002.dcm").unlink()
    out2 = tmp_path / "out2"
    main(["--project", "despiad", "--projects-dir", str(configs),
          "--tag-rules-dir", str(configs / "tag-operations"), "--output", str(out2), str(folder)])
    report = json.loads((out2 / "report.json").read_text())
    assert report["summary"] == {"dropped": 1, "kept": 2}
    assert "min_instances_per_series is 2" in report["files"][0]["reason"]
    assert len(list(out2.rglob("*.dcm"))) == 2


def test_a_broken_project_exits_with_the_precise_error(tmp_path, capsys) -> None:
    demo = (PROJECTS_DIR / "demo.yaml").read_text()
    (tmp_path / "broken.yaml").write_text(demo.replace('name: "demo"', 'name: "broken"\n    size: 3'))
    code = main(["--project", "broken", "--projects-dir", str(tmp_path), "--output", str(tmp_path / "o"),
                 str(tmp_path)])
    assert code == 2
    assert f"{tmp_path / 'broken.yaml'}: project.size: unknown key" in capsys.readouterr().err


def test_without_a_key_a_local_key_file_is_generated_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("PIXL_DEID_KEY", raising=False)
    monkeypatch.setenv("PIXL_STATE_DIR", str(tmp_path / "state"))
    inputs = _inputs(tmp_path)
    assert main(["--project", "demo", "--output", str(tmp_path / "a"), str(inputs)]) == 0
    key_file = tmp_path / "state" / "deid-keys" / "demo.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert main(["--project", "demo", "--output", str(tmp_path / "b"), str(inputs)]) == 0
    first = sorted(p.name for p in (tmp_path / "a").rglob("*.dcm"))
    assert first == sorted(p.name for p in (tmp_path / "b").rglob("*.dcm")) and first
    assert capsys.readouterr().err.count("generated a new key") == 1
