"""The operator's new subcommands against the real stack: load --limit and --priority,
priority, cancel, report and controls schedule, with their exit codes."""

from __future__ import annotations

import json

import pytest

from tui import exit_codes
from tui.cli import main

pytestmark = pytest.mark.stack


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _status(capsys, extract: str) -> dict:
    code, out, _ = run(capsys, "status", "--json")
    assert code == exit_codes.OK
    return next(item for item in json.loads(out) if item["extract"] == extract)


def _extract_of(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("extract "))


def test_load_with_a_limit_and_a_priority_then_change_it_and_cancel(capsys, stack_env, write_cohort, tmp_path):
    cohort = write_cohort(studies=6)
    code, out, _ = run(capsys, "load", str(cohort), "--limit", "4", "--priority", "2", "--yes")
    assert code == exit_codes.OK, out
    assert "studies      4 (4 to queue, 0 already exported, the first 4 of 6 (--limit))" in out
    assert "priority     2" in out
    extract = _extract_of(out)
    status = _status(capsys, extract)
    assert (status["total"], status["priority"]) == (4, 2)

    assert run(capsys, "priority", status["project"], extract, "5")[0] == exit_codes.OK
    assert _status(capsys, extract)["priority"] == 5
    with pytest.raises(SystemExit) as refused:  # argparse refuses it before any call
        main(["priority", status["project"], extract, "6"])
    assert refused.value.code == 2 and "must be 1 to 5" in capsys.readouterr().err

    code, out, _ = run(capsys, "cancel", status["project"], extract, "--yes")
    assert code == exit_codes.OK
    assert out.startswith(f"cancelled {status['project']} / {extract}: ")
    assert _status(capsys, extract)["cancelled_at"] is not None
    code, _, err = run(capsys, "cancel", status["project"], "no-such-extract", "--yes")
    missing = f"pixl-tui: no extract 'no-such-extract' of project '{status['project']}'\n"
    assert (code, err) == (exit_codes.INVALID_INPUT, missing)

    # Loading it again adds nothing, and says why.
    code, out, _ = run(capsys, "load", str(cohort), "--limit", "4", "--yes")
    assert "nothing to queue: this extract was loaded before (its 4 studies" in out

    code, out, _ = run(capsys, "report", status["project"], extract, "--output", str(tmp_path))
    assert code == exit_codes.OK
    written = json.loads((tmp_path / f"{status['project']}-{extract}-report.json").read_text())
    assert written["studies"]["requested"] == 4 and written["extract"]["cancelled_at"]


def test_controls_schedule_set_show_clear(capsys, stack_env):
    code, out, _ = run(capsys, "controls", "schedule", "set", "--time-zone", "Europe/London",
                       "--window", "weekdays 08:00-20:00 rate=1/min in-flight=1",
                       "--window", "weekends 00:00-24:00 in-flight=3")
    try:
        assert code == exit_codes.OK, out
        assert "schedule in Europe/London:" in out
        assert "mon,tue,wed,thu,fri 08:00-20:00 rate=1/min in-flight=1" in out
        assert "sat,sun 00:00-24:00 in-flight=3" in out
        assert "now: " in out and "; changes " in out
        code, out, _ = run(capsys, "controls", "schedule", "--json")
        shown = json.loads(out)
        assert shown["time_zone"] == "Europe/London" and len(shown["windows"]) == 2
        code, out, _ = run(capsys, "controls")
        assert "now          " in out

        code, _, err = run(capsys, "controls", "schedule", "set", "--time-zone", "Nowhere/City",
                           "--window", "daily 08:00-09:00 rate=1")
        assert code == exit_codes.INVALID_INPUT
        assert err == "pixl-tui: schedule: time_zone 'Nowhere/City' is not an IANA time zone\n"
        code, _, err = run(capsys, "controls", "schedule", "set", "--time-zone", "UTC",
                           "--window", "daily 08:00-09:00 speed=1")
        assert code == exit_codes.INVALID_INPUT and "unknown setting 'speed'" in err
    finally:
        code, out, _ = run(capsys, "controls", "schedule", "clear")
    assert code == exit_codes.OK and out.startswith("no schedule: the controls apply at all times")
