"""Controls: how fast raw pulls studies from the VNA, and pausing it."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.validation import Integer, Number
from textual.widgets import Button, Footer, Header, Input, Label, Static

from tui.client import Controls, Schedule
from tui.schedule_text import effective_line, window_text
from tui.screens.base import PixlScreen
from tui.screens.schedule import ScheduleScreen
from tui.widgets.connection_bar import ConnectionBar


def controls_table(controls: Controls) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Transfers", "[b yellow]PAUSED[/]" if controls.paused else "[green]running[/]")
    table.add_row("In flight now", str(controls.in_flight))
    table.add_row("In-flight limit", str(controls.max_in_flight))
    table.add_row("Rate", f"{controls.studies_per_second:g} studies per second")
    return table


def schedule_text(schedule: Schedule) -> str:
    # What the archive sees now, and when that changes by itself: always on screen.
    lines = [f"Now: {effective_line(schedule.effective)}", ""]
    if schedule.time_zone is None or not schedule.windows:
        lines.append("Schedule: none, the controls apply at all times. s edits it.")
    else:
        lines.append(f"Schedule ({schedule.time_zone}), s edits it:")
        lines += [f"  {window_text(window)}" for window in schedule.windows]
    return "\n".join(lines)


class ControlsScreen(PixlScreen):
    TITLE = "Controls"
    # Focus no input at first, so that the letter keys switch screens at once.
    AUTO_FOCUS = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        # The inputs only take numbers, so a letter can act even while one has focus.
        Binding("p", "toggle_pause", "Pause/Resume", priority=True),
        Binding("s", "edit_schedule", "Schedule", priority=True),
        Binding("escape", "leave_input", "Leave input"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.current: Controls | None = None
        self.schedule: Schedule | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        yield Static(id="current")
        yield Static(id="schedule")
        with Vertical(id="controls-form"):
            with Horizontal(classes="field"):
                yield Label("Rate (studies per second)")
                yield Input(id="rate", type="number", validators=[Number(minimum=0.001)])
            with Horizontal(classes="field"):
                yield Label("In-flight limit")
                yield Input(id="in-flight", type="integer", validators=[Integer(minimum=0)])
            with Horizontal(classes="field"):
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Pause", id="pause", variant="warning")
                yield Button("Resume", id="resume", variant="success")
            yield Static(id="controls-error", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#controls-error").display = False

    def reload(self) -> None:
        self.call_server(lambda: (self.client.controls(), self.client.schedule()), self._show_both)

    def _show_both(self, answers: tuple[Controls, Schedule]) -> None:
        self.show(answers[0])
        self.show_schedule(answers[1])

    def show_schedule(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.query_one("#schedule", Static).update(schedule_text(schedule))

    def action_edit_schedule(self) -> None:
        if self.schedule is None:
            self.notify("The schedule has not been read yet.")
            return

        def changed(schedule: Schedule | None) -> None:
            if schedule is not None:
                self.show_schedule(schedule)
                self.notify("Schedule saved." if schedule.windows else "Schedule cleared.")
                self.reload()

        self.app.push_screen(ScheduleScreen(self.client, self.schedule), changed)

    def show(self, controls: Controls) -> None:
        first = self.current is None
        self.current = controls
        self.query_one("#current", Static).update(controls_table(controls))
        if first:
            self.query_one("#rate", Input).value = f"{controls.studies_per_second:g}"
            self.query_one("#in-flight", Input).value = str(controls.max_in_flight)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.apply()
        elif event.button.id in ("pause", "resume"):
            self.set_paused(event.button.id == "pause")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.apply()

    def action_leave_input(self) -> None:
        self.set_focus(None)

    def action_toggle_pause(self) -> None:
        self.set_paused(not (self.current.paused if self.current else False))

    def set_paused(self, paused: bool) -> None:
        self.call_server(
            lambda: self.client.set_controls(paused=paused),
            self._changed,
            group="change",
            on_error=self._show_error,
        )

    def apply(self) -> None:
        rate_input = self.query_one("#rate", Input)
        limit_input = self.query_one("#in-flight", Input)
        for field, name in ((rate_input, "rate"), (limit_input, "in-flight limit")):
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                self._show_error(
                    f"The {name} {field.value!r} is not valid: "
                    + "; ".join(result.failure_descriptions)
                )
                return
        rate, limit = float(rate_input.value), int(limit_input.value)
        self.call_server(
            lambda: self.client.set_controls(studies_per_second=rate, max_in_flight=limit),
            self._changed,
            group="change",
            on_error=self._show_error,
        )

    def _changed(self, controls: Controls) -> None:
        self._show_error(None)
        self.show(controls)
        self.notify(
            "Transfers paused."
            if controls.paused
            else f"Running at {controls.studies_per_second:g}/s, "
            f"at most {controls.max_in_flight} in flight."
        )

    def _show_error(self, error: object | None) -> None:
        widget = self.query_one("#controls-error", Static)
        widget.display = error is not None
        if error is not None:
            widget.update(f"✖ {error}")
