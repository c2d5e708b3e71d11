"""The operator's new tools in the app, driven with Pilot against the real stack:
the archive screen, load options, the schedule editor, priority, cancel, report."""

from __future__ import annotations

import json
import os
import socket

import pytest
from stack_support import point_raw_archive_at
from textual.widgets import Checkbox, Input, Select, TextArea
from tui_helpers import screen_text, settled, text_of, wait_until

from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.render import raw_modalities
from tui.app import PixlApp
from tui.client import RawClient, prepare_upload
from tui.screens.confirm import ConfirmScreen
from tui.screens.confirm_load import ConfirmLoadScreen
from tui.screens.schedule import ScheduleScreen
from tui.widgets.extract_table import ExtractTable
from tui.widgets.live_table import LiveTable

pytestmark = pytest.mark.stack

REFRESH = 0.3


@pytest.fixture
def restore_schedule(raw_client: RawClient):
    yield raw_client
    raw_client.clear_schedule()


async def _type(pilot, selector: str, text: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)


async def test_archive_screen_echoes_and_finds_a_patients_studies(stack, raw_client, tmp_path):
    seed = 770000 + os.getpid() % 10_000
    patient = studygen.make_patient(seed)
    for offset in (1, 2):
        study = studygen.write_generated_study(
            studygen.StudySpec(modality="CR", series=1, instances_per_series=2, seed=seed + offset),
            patient, tmp_path / f"study-{offset}")
        storescu(study.files, stack.settings.vna)
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("v")
        await settled(pilot)
        await pilot.press("f2")
        await wait_until(pilot, lambda: "answered the C-ECHO" in text_of(app, "#vna-status"), "echo")
        await _type(pilot, "#mrn", patient.mrn)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "2 studies in the archive match" in text_of(app, "#vna-status"),
                         "the find")
        table = app.screen.query_one(LiveTable)
        assert [str(table.get_cell(k, "modality")) for k in ("0", "1")] == ["CR", "CR"]
        assert {str(table.get_cell(k, "cached")) for k in ("0", "1")} == {"no"}
        # The typed MRN is masked on screen, and no notification repeats it.
        assert patient.mrn not in screen_text(app)
        assert all(patient.mrn not in n.message for n in app._notifications)


@pytest.fixture
def archive_away(stack):
    """raw's archive entry pointed at a port where nothing listens, then put back."""
    settings = stack.settings
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    real = raw_modalities(settings)["vna"]
    point_raw_archive_at(settings, dict(real, Port=closed_port))
    yield
    point_raw_archive_at(settings, real)


async def test_archive_screen_shows_a_failed_find_on_the_screen(raw_client, archive_away):
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("v")
        await settled(pilot)
        await _type(pilot, "#mrn", "NOBODY")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "✖" in text_of(app, "#vna-status"), "the error")
        assert "C-FIND on vna failed" in text_of(app, "#vna-status")


async def test_load_screen_practice_run_with_a_limit_and_priority(raw_client, write_cohort):
    cohort = write_cohort(studies=5)
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("l")
        await _type(pilot, "#limit", "2")
        app.screen.query_one("#priority", Select).value = 4
        app.screen.query_one("#practice", Checkbox).value = True
        await _type(pilot, "#path", str(cohort))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmLoadScreen), "the summary")
        summary = app.screen.summary
        assert (summary.studies, summary.studies_in_extract, summary.queued) == (2, 5, 2)
        assert (summary.practice, summary.priority, summary.dry_run) == (True, 4, True)
        assert "Practice run" in screen_text(app) and "Practise on 2 studies (y)" in screen_text(app)
        await pilot.press("y")
        await wait_until(pilot, lambda: text_of(app, "#load-result").startswith("Queued "), "queued")
        assert "a practice run: nothing will be exported" in text_of(app, "#load-result")
    status = next(s for s in raw_client.extracts() if s.extract == summary.extract)
    assert (status.total, status.practice, status.priority) == (2, True, 4)


async def test_a_load_that_adds_nothing_says_so(raw_client, write_cohort):
    cohort = write_cohort(studies=2)
    raw_client.load_extract(prepare_upload(cohort), dry_run=False)
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("l")
        await _type(pilot, "#path", str(cohort))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmLoadScreen), "the summary")
        assert "this extract was loaded before (its 2 studies" in screen_text(app)


async def test_overview_changes_priority_cancels_and_writes_the_report(
    raw_client, write_cohort, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    summary = raw_client.load_extract(prepare_upload(write_cohort(studies=3)), dry_run=False)
    key = f"{summary.project}/{summary.extract}"
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.screen.query_one(ExtractTable)
        await wait_until(pilot, lambda: key in table.rows, "the extract")
        table.move_cursor(row=table.get_row_index(key))
        await settled(pilot)
        await pilot.press("plus", "plus")
        await wait_until(pilot, lambda: str(table.get_cell(key, "priority")) == "3", "priority 3")
        await pilot.press("minus")
        await wait_until(pilot, lambda: str(table.get_cell(key, "priority")) == "2", "priority 2")

        await pilot.press("r")
        report = tmp_path / f"{summary.project}-{summary.extract}-report.json"
        await wait_until(pilot, report.exists, "the report files")
        assert json.loads(report.read_text())["studies"]["requested"] == 3
        assert (tmp_path / f"{summary.project}-{summary.extract}-report.html").read_text().startswith(
            "<!DOCTYPE html>")

        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("n")  # a no changes nothing
        await settled(pilot)
        assert next(s for s in raw_client.extracts() if s.key == key).cancelled_at is None
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await wait_until(
            pilot, lambda: next(s for s in raw_client.extracts() if s.key == key).cancelled_at is not None,
            "the cancel")


async def test_controls_screen_edits_the_schedule_and_shows_what_applies_now(restore_schedule):
    client = restore_schedule
    app = PixlApp(client, refresh_seconds=REFRESH)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("c")
        await wait_until(pilot, lambda: app.screen.schedule is not None, "the schedule")
        assert "from the controls" in screen_text(app)
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, ScheduleScreen), "the editor")
        await _type(pilot, "#time-zone", "America/New_York")
        app.screen.query_one("#windows", TextArea).text = "daily 00:00-24:00 rate=2/min in-flight=1"
        await pilot.click("#save")
        await wait_until(pilot, lambda: not isinstance(app.screen, ScheduleScreen), "saved")
        await wait_until(pilot, lambda: "schedule window mon,tue,wed,thu,fri,sat,sun 00:00-24:00"
                                        in screen_text(app), "the window now")
        assert "rate 2/min, at most 1 in flight" in screen_text(app)
        stored = client.schedule()
        assert (stored.time_zone, stored.windows[0].max_in_flight) == ("America/New_York", 1)

        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, ScheduleScreen), "the editor")
        app.screen.query_one("#windows", TextArea).text = "someday 08:00-09:00 rate=1"
        await pilot.click("#save")
        await wait_until(pilot, lambda: app.screen.query_one("#schedule-error").display, "the error")
        assert "unknown day 'someday'" in text_of(app, "#schedule-error")
