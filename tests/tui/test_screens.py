"""Every screen driven with Textual's Pilot against the real stack."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Select
from tui_helpers import screen_text, settled, text_of, wait_until

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.hook_events import record_hook_calls
from tui.app import PixlApp
from tui.client import RawClient, prepare_upload
from tui.screens.confirm_load import ConfirmLoadScreen
from tui.widgets.extract_table import ExtractTable

pytestmark = pytest.mark.stack

OMOP_PROJECT = "test-extract-uclh-omop-cdm"
REFRESH = 0.3


@pytest.fixture(autouse=True)
def lasting_notifications(monkeypatch):
    """Notifications that outlive the test: they expire after 5 s, and a loaded machine
    may take longer than that between two that a test counts."""
    monkeypatch.setattr(PixlApp, "NOTIFICATION_TIMEOUT", 600.0)


def load(client: RawClient, path) -> tuple[str, str]:
    summary = client.load_extract(prepare_upload(path), dry_run=False)
    return summary.project, summary.extract


def wait_for_extract_end(client: RawClient, project: str, extract: str) -> None:
    """Block (outside any app) until every study of the extract has ended."""
    import time

    for _ in range(600):
        status = next(s for s in client.extracts() if (s.project, s.extract) == (project, extract))
        if status.done:
            return
        time.sleep(0.2)
    raise AssertionError(f"{project}/{extract} never finished")


def notifications(app: PixlApp) -> list[str]:
    return [notification.message for notification in app._notifications]


async def type_into(pilot, selector: str, text: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)


async def test_overview_shows_progress_of_a_loaded_extract(raw_client, write_cohort):
    project, extract = load(raw_client, write_cohort(studies=3))
    key = f"{project}/{extract}"
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.screen.query_one(ExtractTable)
        await wait_until(pilot, lambda: key in table.rows, "the extract appears")
        await wait_until(
            pilot, lambda: str(table.get_cell(key, "done")) == "3/3", "all three studies end"
        )
        assert str(table.get_cell(key, "not_found")) == "3"  # none is in the VNA
        assert str(table.get_cell(key, "problems")) == "0"  # "Failed" counts failed only
        assert str(table.get_cell(key, "eta")) == "done"
        table.move_cursor(row=table.get_row_index(key))
        await settled(pilot)
        details = text_of(app, "#details")
        assert details.startswith(f"{project} / {extract}")
        assert "not_found 3" in details


async def test_load_screen_confirms_a_summary_then_queues(raw_client, generated_inputs):
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("l")
        await type_into(pilot, "#path", str(generated_inputs / "omop"))
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: isinstance(app.screen, ConfirmLoadScreen), "the summary to confirm"
        )
        summary = app.screen.summary
        assert (summary.project, summary.modalities) == (OMOP_PROJECT, ["DX", "CR"])
        assert summary.destination == {"dicom": "ftps", "parquet": "ftps"}
        assert summary.dry_run is True and summary.studies > 0
        await pilot.press("y")
        await wait_until(
            pilot, lambda: text_of(app, "#load-result").startswith("Queued "), "the load's result"
        )
        assert f"studies of {OMOP_PROJECT} / {summary.extract}" in text_of(app, "#load-result")
        assert (OMOP_PROJECT, summary.extract) in {
            (s.project, s.extract) for s in raw_client.extracts()
        }


async def test_load_screen_cancel_queues_nothing(raw_client, write_cohort):
    cohort = write_cohort(studies=1)
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("l")
        await type_into(pilot, "#path", str(cohort))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmLoadScreen), "the summary")
        extract = app.screen.summary.extract
        await pilot.press("n")
        await settled(pilot)
        assert text_of(app, "#load-result") == "Not queued."
    assert extract not in {s.extract for s in raw_client.extracts()}


async def test_load_screen_shows_the_servers_validation_error_in_place(raw_client, write_cohort):
    cohort = write_cohort(project="no-such-project")
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("l")
        await type_into(pilot, "#path", str(cohort))
        await pilot.press("enter")
        error = app.screen.query_one("#path-error")
        await wait_until(pilot, lambda: error.display, "the error")
        assert "no-such-project" in text_of(app, "#path-error")
        assert not isinstance(app.screen, ConfirmLoadScreen)


async def test_failures_screen_lists_reasons_and_retries_one_and_all(raw_client, write_cohort):
    project, extract = load(raw_client, write_cohort(studies=2))
    wait_for_extract_end(raw_client, project, extract)
    job_ids = {str(f.job_id) for f in raw_client.failures(project, extract)}
    assert len(job_ids) == 2
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: job_ids <= {k.value for k in table.rows}, "both failures")
        job = min(job_ids)
        assert str(table.get_cell(job, "state")) == "not_found"
        assert str(table.get_cell(job, "reason"))  # a reason is shown
        table.move_cursor(row=table.get_row_index(job))
        await pilot.press("r")
        await wait_until(pilot, lambda: "Queued 1 study again." in notifications(app), "retry one")
        await pilot.press("a")
        # Retry all covers every failure of the stack: at least the other of ours.
        await wait_until(pilot, lambda: len(notifications(app)) == 2, "retry all")
        assert notifications(app)[1].startswith("Queued ")
        assert notifications(app)[1].endswith(" again.")


async def test_plugins_screen_lists_the_plugins_and_a_failed_lifecycle_hook(stack, raw_client,
                                                                           write_cohort):
    project, extract = load(raw_client, write_cohort(studies=1))
    plugin = f"site_step_{extract}"  # this test's own, among whatever other tests recorded
    with pixl_db.connect(stack.settings, autocommit=True) as conn:
        extract_id = conn.execute(
            "SELECT id FROM extracts WHERE project_slug = %s AND extract_name = %s", (project, extract)
        ).fetchone()[0]
        record_hook_calls(conn, "pixl_extract_finished", project, extract_id, None,
                          [(plugin, "ConnectionError: research database down")])
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("h")
        errors = app.screen.query_one("#hook-errors", DataTable)
        await wait_until(pilot, lambda: errors.row_count > 0, "the hook errors")
        rows = [[str(cell) for cell in errors.get_row(key)] for key in errors.rows]
        ours = [row for row in rows if row[2] == plugin]
        assert ours, rows
        assert ours[0][1] == "extract_finished"
        assert ours[0][3] == f"{project}/{extract}"
        assert ours[0][5] == "ConnectionError: research database down"
        plugins = app.screen.query_one("#plugins", DataTable)
        names = {str(plugins.get_row(key)[0]) for key in plugins.rows}
        assert {"pixl_hooks.destinations.ftps", "pixl_hooks.destinations.dicomweb"} <= names
        assert "failed lately" in text_of(app, "#hook-errors-summary")


async def test_controls_screen_changes_rate_limit_and_pauses(restore_controls):
    client = restore_controls
    app = PixlApp(client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("c")
        await wait_until(pilot, lambda: app.screen.current is not None, "the current controls")
        await type_into(pilot, "#rate", "3.5")
        await type_into(pilot, "#in-flight", "2")
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: (
                (client.controls().studies_per_second, client.controls().max_in_flight) == (3.5, 2)
            ),
            "the change",
        )
        await wait_until(
            pilot, lambda: "3.5 studies per second" in screen_text(app), "the new rate"
        )
        paused_before = client.controls().paused
        await pilot.press("escape", "p")
        await wait_until(pilot, lambda: client.controls().paused is not paused_before, "pause")
        await wait_until(
            pilot,
            lambda: ("PAUSED" in screen_text(app)) is not paused_before,
            "the screen to show it",
        )
        await pilot.press("p")
        await wait_until(pilot, lambda: client.controls().paused is paused_before, "resume")


async def test_controls_screen_shows_invalid_values_in_place(restore_controls):
    app = PixlApp(restore_controls, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("c")
        await wait_until(pilot, lambda: app.screen.current is not None, "the current controls")
        await type_into(pilot, "#rate", "0")
        await pilot.press("enter")
        await settled(pilot)
        assert text_of(app, "#controls-error").startswith("✖ The rate '0' is not valid")


async def test_export_screen_starts_and_watches_an_export(raw_client, generated_inputs):
    project, extract = load(raw_client, generated_inputs / "omop")
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("e")
        select = app.screen.query_one(Select)
        await wait_until(
            pilot,
            lambda: any(value == (project, extract) for _label, value in select._options),
            "the choice",
        )
        select.value = (project, extract)
        before = {e.export_id for e in raw_client.exports(project, extract)}
        await pilot.press("s")
        table = app.screen.query_one(DataTable)

        def new_export_finished() -> bool:
            rows = [k.value for k in table.rows if int(k.value) not in before]
            return bool(rows) and str(table.get_cell(rows[0], "state")) in ("done", "failed")

        await wait_until(pilot, new_export_finished, "the export to finish")
        key = next(k.value for k in table.rows if int(k.value) not in before)
        assert str(table.get_cell(key, "state")) == "done"
        table.move_cursor(row=table.get_row_index(key))
        await settled(pilot)
        export = next(e for e in raw_client.exports(project, extract) if str(e.export_id) == key)
        assert export.export_dir and f"Files written to: {export.export_dir}" in text_of(
            app, "#export-details"
        )


async def test_help_screen_lists_the_keys_of_every_screen(raw_client):
    app = PixlApp(raw_client, refresh_seconds=REFRESH)
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("question_mark")
        await settled(pilot)
        text = screen_text(app)
        assert "PIXL operator console: keys" in text
        for expected in (
            "r           Retry this",
            "a           Retry all",
            "p           Pause/Resume",
            "s           Start export",
            "ctrl+b      Browse",
            "y           Queue",
        ):
            assert expected in text
        await pilot.press("escape")
        assert app.screen.__class__.__name__ == "OverviewScreen"


async def test_command_palette_pauses_and_resumes(restore_controls):
    client = restore_controls
    app = PixlApp(client, refresh_seconds=REFRESH)
    async with app.run_test(size=(140, 40)) as pilot:
        for command, paused in (("Pause transfers", True), ("Resume transfers", False)):
            await pilot.press("ctrl+p")
            await settled(pilot)
            await pilot.press(*command)
            await pilot.pause(0.5)  # the palette searches as one types
            await pilot.press("enter")
            await wait_until(
                pilot, lambda paused=paused: client.controls().paused is paused, command
            )
            assert app.current_mode == "controls"
