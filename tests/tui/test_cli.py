"""The scriptable subcommands, against the real stack, with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui import exit_codes
from tui.cli import main

OMOP_PROJECT = "test-extract-uclh-omop-cdm"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def status_of(capsys, project: str, extract: str) -> dict | None:
    code, out, _ = run(capsys, "status", "--json")
    assert code == exit_codes.OK
    return next(
        (
            item
            for item in json.loads(out)
            if item["project"] == project and item["extract"] == extract
        ),
        None,
    )


def test_load_of_a_missing_path_is_invalid_input(capsys, tmp_path):
    missing = tmp_path / "nothing-here"
    assert run(capsys, "--url", "http://127.0.0.1:9", "load", str(missing)) == (
        exit_codes.INVALID_INPUT,
        "",
        f"pixl-tui: no such file or folder: {missing}\n",
    )


def test_load_of_a_folder_that_is_not_an_omop_extract_is_invalid_input(capsys, tmp_path):
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9", "load", str(tmp_path))
    assert code == exit_codes.INVALID_INPUT
    assert err == (
        f"pixl-tui: {tmp_path} is a folder without extract_summary.json: not an OMOP ES extract\n"
    )


def test_retry_needs_job_ids_or_all(capsys):
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9", "retry")
    assert code == exit_codes.INVALID_INPUT
    assert "name the JOB_IDs to retry, or pass --all" in err


@pytest.mark.stack
def test_dry_run_summarises_and_queues_nothing(stack_env, capsys, write_cohort):
    cohort = write_cohort(studies=2)
    code, out, _ = run(capsys, "load", str(cohort), "--dry-run")
    assert code == exit_codes.OK
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["project"] == OMOP_PROJECT
    assert lines["studies"] == "2 (2 to queue, 0 already exported)"
    assert lines["modalities"] == "DX, CR"
    assert lines["destination"] == "dicom: ftps, parquet: ftps"
    assert status_of(capsys, OMOP_PROJECT, lines["extract"]) is None


@pytest.mark.stack
def test_load_without_yes_off_a_terminal_is_declined(stack_env, capsys, write_cohort):
    code, out, err = run(capsys, "load", str(write_cohort(studies=1)))
    assert code == exit_codes.DECLINED
    assert "Pass --yes to queue without asking." in err
    extract = dict(line.split(None, 1) for line in out.splitlines())["extract"]
    assert status_of(capsys, OMOP_PROJECT, extract) is None


@pytest.mark.stack
def test_load_wait_ends_in_partial_failure_when_studies_are_not_found(
    stack_env, capsys, write_cohort
):
    code, out, _ = run(
        capsys,
        "load",
        str(write_cohort(studies=3)),
        "--yes",
        "--wait",
        "--poll",
        "0.5",
        "--timeout",
        "120",
    )
    assert code == exit_codes.PARTIAL_FAILURE, out
    extract = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("extract "))[
        "extract"
    ]
    assert f"queued 3 of 3 studies of {OMOP_PROJECT} / {extract}" in out
    status = status_of(capsys, OMOP_PROJECT, extract)
    assert status["total"] == 3 and status["counts"].get("not_found") == 3 and status["done"]

    code, out, _ = run(capsys, "failures", "--extract", extract, "--json")
    assert code == exit_codes.PARTIAL_FAILURE
    failures = json.loads(out)
    assert [f["state"] for f in failures] == ["not_found"] * 3
    assert {f["project"] for f in failures} == {OMOP_PROJECT}

    code, out, _ = run(capsys, "retry", "--all", "--project", OMOP_PROJECT, "--extract", extract)
    assert (code, out) == (exit_codes.OK, "retried 3\n")
    code, out, _ = run(capsys, "retry", str(failures[0]["job_id"]))
    assert code == exit_codes.OK and out in ("retried 0\n", "retried 1\n")


@pytest.mark.stack
def test_failures_of_an_extract_without_any_exit_ok(stack_env, capsys):
    code, out, _ = run(capsys, "failures", "--extract", "no-such-extract")
    assert (code, out) == (exit_codes.OK, "no failures\n")


@pytest.mark.stack
def test_an_unknown_project_is_invalid_input_with_the_servers_reason(
    stack_env, capsys, write_cohort
):
    code, _, err = run(capsys, "load", str(write_cohort(project="no-such-project")), "--yes")
    assert code == exit_codes.INVALID_INPUT
    assert err.startswith("pixl-tui: ") and "no-such-project" in err


@pytest.mark.stack
def test_controls_change_and_show(stack_env, capsys, restore_controls):
    code, out, _ = run(capsys, "controls", "--rate", "3.5", "--in-flight", "2", "--pause", "--json")
    assert code == exit_codes.OK
    changed = json.loads(out)
    assert (changed["studies_per_second"], changed["max_in_flight"], changed["paused"]) == (
        3.5,
        2,
        True,
    )
    code, out, _ = run(capsys, "controls", "--resume")
    assert code == exit_codes.OK
    assert out.startswith("running: 3.5 studies/s, in flight ") and out.endswith("/2\n")
    assert restore_controls.controls().paused is False


@pytest.mark.stack
def test_a_rate_of_zero_is_refused_by_the_server(stack_env, capsys, restore_controls):
    code, _, err = run(capsys, "controls", "--rate", "0")
    assert code == exit_codes.INVALID_INPUT
    assert "studies_per_second" in err


@pytest.mark.stack
def test_export_wait_says_where_the_files_went(stack_env, capsys, generated_inputs):
    code, out, _ = run(capsys, "load", str(generated_inputs / "omop"), "--yes")
    assert code == exit_codes.OK, out
    extract = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("extract "))[
        "extract"
    ]
    code, out, _ = run(
        capsys, "export", OMOP_PROJECT, extract, "--wait", "--poll", "0.5", "--timeout", "120"
    )
    assert code == exit_codes.OK, out
    files = dict(line.split(None, 1) for line in out.splitlines()[1:] if " " in line)["files"]
    assert (Path(files) / "radiology" / "IMAGE_LINKER.parquet").is_file()


def test_destinations_lists_the_installed_plugins_and_their_hooks(stack_env, capsys):
    code, out, _ = run(capsys, "destinations", "--json")
    assert code == exit_codes.OK
    by_name = {d["name"]: d for d in json.loads(out)}
    assert {"none", "ftps", "ftpes", "dicomweb", "xnat"} <= set(by_name)
    assert "pixl_export_dicom_study" in by_name["ftps"]["hooks"]
