"""Layout snapshots of every screen, fed fixed payloads through the real client.

These pin the layout only; what the screens do is tested against the real stack
in test_screens.py. Update after a deliberate change with
`pytest tests/tui/test_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

from textual.pilot import Pilot
from tui_helpers import settled

from tui.app import PixlApp

SIZE = (120, 34)
NEVER = 3600.0  # no live refresh during a snapshot


def test_overview_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, terminal_size=SIZE, run_before=settled)


def test_help_screen_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE, run_before=settled)


def test_load_screen_shows_a_validation_error_in_place(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)

    async def type_a_missing_path(pilot: Pilot) -> None:
        await pilot.press("l")
        await pilot.click("#path")
        await pilot.press(*"/no/such/extract", "enter")
        await settled(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=type_a_missing_path)


def test_failures_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["f"], terminal_size=SIZE, run_before=settled)


def test_controls_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["c"], terminal_size=SIZE, run_before=settled)


def test_export_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["e"], terminal_size=SIZE, run_before=settled)


def test_plugins_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["h"], terminal_size=SIZE, run_before=settled)


def test_archive_screen_after_a_find(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)

    async def find(pilot: Pilot) -> None:
        await pilot.press("v")
        await pilot.click("#date")
        await pilot.press(*"2021-01-01-2023-12-31", "enter")
        await settled(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=find)


def test_schedule_dialog_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["c", "s"], terminal_size=SIZE, run_before=settled)


def test_cancel_confirmation_layout(snap_compare, fixed_client):
    app = PixlApp(fixed_client, refresh_seconds=NEVER)
    assert snap_compare(app, press=["x"], terminal_size=SIZE, run_before=settled)
