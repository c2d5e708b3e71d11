"""Editing the weekly transfer schedule: a time zone and one window a line,
in the form `pixl-tui controls schedule set --window` takes."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from tui.client import RawApiError, RawClient, Schedule
from tui.schedule_text import parse_window, window_text

HINT = (
    "One window a line: DAYS HH:MM-HH:MM rate=R in-flight=N (rate or in-flight or both).\n"
    "DAYS: mon,tue,… or weekdays, weekends, daily. R per second, or N/min, N/h.\n"
    "Outside every window the controls apply; where windows overlap, the first wins."
)


class ScheduleScreen(ModalScreen[Schedule | None]):
    """Answers the stored schedule after a change, None if nothing changed."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, client: RawClient, schedule: Schedule) -> None:
        super().__init__()
        self.client = client
        self.schedule = schedule

    def compose(self) -> ComposeResult:
        with Vertical(id="schedule-dialog", classes="dialog"):
            yield Label("Transfer schedule", classes="dialog-title")
            with Horizontal(classes="field"):
                yield Label("Time zone (IANA)")
                yield Input(
                    self.schedule.time_zone or "Europe/London", id="time-zone", placeholder="Europe/London"
                )
            yield Static(HINT, classes="dim")
            yield TextArea(
                "\n".join(window_text(w) for w in self.schedule.windows), id="windows"
            )
            yield Static(id="schedule-error", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Clear the schedule", id="clear", variant="warning")
                yield Button("Close (esc)", id="close")

    def on_mount(self) -> None:
        self.query_one("#schedule-error").display = False

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "close":
            self.dismiss(None)
        elif event.button.id == "clear":
            self._send(self.client.clear_schedule)
        elif event.button.id == "save":
            self.save()

    def save(self) -> None:
        lines = [line for line in self.query_one("#windows", TextArea).text.splitlines() if line.strip()]
        time_zone = self.query_one("#time-zone", Input).value.strip()
        try:
            windows = [parse_window(line) for line in lines]
        except RawApiError as error:
            self._show_error(error)
            return
        self._send(lambda: self.client.set_schedule(time_zone, windows))

    def _send(self, call) -> None:
        def run() -> None:
            try:
                stored = call()
            except RawApiError as error:
                self.app.call_from_thread(self._show_error, error)
                return
            self.app.call_from_thread(self.dismiss, stored)

        self.run_worker(run, thread=True, group="schedule", exclusive=True)

    def _show_error(self, error: object) -> None:
        widget = self.query_one("#schedule-error", Static)
        widget.display = True
        widget.update(f"✖ {error}")
