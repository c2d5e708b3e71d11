"""`pixl-tui vna echo` and `vna find` against the real stack: the archive answers
through raw, the table says what raw's cache holds, the query values are never logged."""

from __future__ import annotations

import json
import os
import signal

import pytest
from operator_helpers import PROJECT, archive_studies, cohort_csv, upload_csv, wait_for_jobs

from tui import exit_codes
from tui.cli import main

pytestmark = pytest.mark.stack


@pytest.fixture
def cli_env(stack, monkeypatch):
    monkeypatch.setenv("PIXL_RAW_URL", stack.settings.raw.url)
    monkeypatch.setenv("ORTHANC_USERNAME", stack.settings.orthanc_username)
    monkeypatch.setenv("ORTHANC_PASSWORD", stack.settings.orthanc_password)


def _logs(stack) -> str:
    """What PIXL's servers logged (the VNA is the hospital's archive, not ours)."""
    folder = stack.settings.state_dir / "logs"
    return "".join((folder / f"{name}.log").read_text(errors="replace") for name in ("raw", "anon"))


def test_echo_answers_and_says_so_when_the_archive_is_down(stack, cli_env, capsys):
    assert main(["vna", "echo"]) == exit_codes.OK
    assert "vna answered the C-ECHO from raw" in capsys.readouterr().out

    vna_pid = next(s.pid for s in stack.stack.status() if s.name == "vna")
    os.kill(vna_pid, signal.SIGKILL)
    try:
        assert main(["vna", "echo"]) == exit_codes.UNREACHABLE
        assert "vna: the archive did not answer the C-ECHO" in capsys.readouterr().err
    finally:
        stack.stack.up()
    assert main(["vna", "echo"]) == exit_codes.OK


def test_find_lists_the_patients_studies_and_what_raw_holds(stack, conn, controls, cli_env, capsys, tmp_path):
    studies = archive_studies(stack.settings, tmp_path, 2, patient_seed=424242 + os.getpid())
    mrn = studies[0].patient.mrn
    before_logs = len(_logs(stack))

    assert main(["vna", "find", "--mrn", mrn, "--json"]) == exit_codes.OK
    found = json.loads(capsys.readouterr().out)
    assert [(s["instances"], s["series"], s["cached"]) for s in found] == [(2, 1, "no")] * 2
    assert {s["study_date"] for s in found} == {s.study_date.isoformat() for s in studies}

    # Fetch one of them into raw: find shows it as held.
    summary = upload_csv(stack.settings, cohort_csv(studies[:1], tmp_path))
    wait_for_jobs(conn, summary, lambda js: all("cached" in j["state_times"] for j in js), "cached")
    assert main(["vna", "find", "--accession", studies[0].accession]) == exit_codes.OK
    table = capsys.readouterr().out
    assert "complete" in table and "1 studies" in table
    assert main(["vna", "find", "--mrn", mrn, "--date", f"{studies[1].study_date}-{studies[1].study_date}",
                 "--modality", "dx", "--json"]) == exit_codes.OK
    (only,) = json.loads(capsys.readouterr().out)
    assert only["study_date"] == studies[1].study_date.isoformat()

    # Neither raw nor anon wrote a query value into its log.
    new_logs = _logs(stack)[before_logs:]
    for value in (mrn, studies[0].accession, studies[0].study_uid):
        assert value not in new_logs
    assert PROJECT in summary["project"]


def test_find_refuses_an_unbounded_or_malformed_query(stack, cli_env, capsys):
    assert main(["vna", "find", "--modality", "CT"]) == exit_codes.INVALID_INPUT
    assert "give at least one of mrn, accession, study_uid or date" in capsys.readouterr().err
    assert main(["vna", "find", "--date", "2020-13-45"]) == exit_codes.INVALID_INPUT
    assert "date 2020-13-45 is not a calendar date" in capsys.readouterr().err
