"""Load an extract: choose it, see it validated in place, confirm a summary, queue it.

Nothing is queued before the operator has seen what the server understood
(a `?dry_run=1` POST) and said yes; only then is the same upload sent for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.validation import Integer
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static

from tui.client import ExtractUpload, LoadSummary, RawApiError, prepare_upload
from tui.screens.base import PixlScreen
from tui.screens.confirm_load import ConfirmLoadScreen
from tui.screens.file_picker import FilePickerScreen
from tui.widgets.connection_bar import ConnectionBar


class LoadScreen(PixlScreen):
    TITLE = "Load an extract"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+b", "browse", "Browse"),
        Binding("escape", "leave_input", "Leave input"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        with Vertical(id="load-form"):
            yield Label(
                "A CSV cohort, or an OMOP ES extract folder (the one holding extract_summary.json)"
            )
            with Horizontal(id="path-row"):
                yield Input(placeholder="path of the extract", id="path")
                yield Button("Browse…", id="browse")
                yield Button("Check", id="check", variant="primary")
            with Horizontal(id="load-options"):
                yield Label("Only the first")
                yield Input(
                    placeholder="all", id="limit", type="integer", validators=[Integer(minimum=1)]
                )
                yield Label("studies   Priority")
                yield Select(
                    [(f"{n}" + (" (first)" if n == 5 else ""), n) for n in range(1, 6)],
                    value=1,
                    allow_blank=False,
                    id="priority",
                )
                yield Checkbox("Practice run: export nothing, keep nothing", id="practice")
            yield Static(id="path-error", classes="error")
            yield Static(id="load-result")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#path-error").display = False
        self.query_one("#path", Input).focus()

    def action_leave_input(self) -> None:
        self.set_focus(None)

    def action_browse(self) -> None:
        self.app.push_screen(FilePickerScreen(Path.cwd()), self._picked)

    def _picked(self, path: Path | None) -> None:
        if path is not None:
            self.query_one("#path", Input).value = str(path)
            self.check()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "browse":
            self.action_browse()
        elif event.button.id == "check":
            self.check()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.check()

    def check(self) -> None:
        """Validate locally, then ask the server for a dry run."""
        self._show_error(None)
        self.query_one("#load-result", Static).update("")
        raw_path = self.query_one("#path", Input).value.strip()
        if not raw_path:
            self._show_error("Enter the path of a CSV cohort or of an OMOP ES extract folder.")
            return
        try:
            upload = prepare_upload(Path(raw_path))
        except RawApiError as error:
            self._show_error(str(error))
            return
        try:
            options = self.load_options()
        except ValueError as error:
            self._show_error(str(error))
            return
        self.query_one("#load-result", Static).update(f"Checking {upload.source} …")
        self.call_server(
            lambda: self.client.load_extract(upload, dry_run=True, **options),
            lambda summary: self._confirm(upload, summary, options),
            group="load",
            on_error=self._show_error,
        )

    def load_options(self) -> dict[str, Any]:
        """--limit, --priority and --practice as the form says."""
        limit = self.query_one("#limit", Input)
        result = limit.validate(limit.value)
        if limit.value.strip() and result is not None and not result.is_valid:
            raise ValueError(f"The limit {limit.value!r} is not a whole number of studies, at least 1.")
        return {
            "limit": int(limit.value) if limit.value.strip() else None,
            "priority": self.query_one("#priority", Select).value,
            "practice": self.query_one("#practice", Checkbox).value,
        }

    def _confirm(self, upload: ExtractUpload, summary: LoadSummary, options: dict[str, Any]) -> None:
        self.query_one("#load-result", Static).update("")

        def answered(yes: bool | None) -> None:
            if yes:
                self._queue(upload, options)
            else:
                self.query_one("#load-result", Static).update("Not queued.")

        self.app.push_screen(ConfirmLoadScreen(summary), answered)

    def _queue(self, upload: ExtractUpload, options: dict[str, Any]) -> None:
        self.query_one("#load-result", Static).update(f"Queueing {upload.source} …")
        self.call_server(
            lambda: self.client.load_extract(upload, dry_run=False, **options),
            self._queued,
            group="load",
            on_error=self._show_error,
        )

    def _queued(self, summary: LoadSummary) -> None:
        message = (
            f"Queued {summary.queued} of {summary.studies} studies of "
            f"{summary.project} / {summary.extract}"
        )
        if summary.already_exported:
            message += f" ({summary.already_exported} already exported)"
        if summary.practice:
            message += ", a practice run: nothing will be exported"
        if summary.nothing_added():
            message += f": {summary.nothing_added()}"
        self.query_one("#load-result", Static).update(message + ". Press o to watch them.")
        self.notify(message)

    def _show_error(self, error: RawApiError | str | None) -> None:
        widget = self.query_one("#path-error", Static)
        widget.display = error is not None
        if error is not None:
            self.query_one("#load-result", Static).update("")
            widget.update(f"✖ {error}")
