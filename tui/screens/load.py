"""Load an extract: choose it, see it validated in place, confirm a summary, queue it.

Nothing is queued before the operator has seen what the server understood
(a `?dry_run=1` POST) and said yes; only then is the same upload sent for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, Static

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
        self.query_one("#load-result", Static).update(f"Checking {upload.source} …")
        self.call_server(
            lambda: self.client.load_extract(upload, dry_run=True),
            lambda summary: self._confirm(upload, summary),
            group="load",
            on_error=self._show_error,
        )

    def _confirm(self, upload: ExtractUpload, summary: LoadSummary) -> None:
        self.query_one("#load-result", Static).update("")

        def answered(yes: bool | None) -> None:
            if yes:
                self._queue(upload)
            else:
                self.query_one("#load-result", Static).update("Not queued.")

        self.app.push_screen(ConfirmLoadScreen(summary), answered)

    def _queue(self, upload: ExtractUpload) -> None:
        self.query_one("#load-result", Static).update(f"Queueing {upload.source} …")
        self.call_server(
            lambda: self.client.load_extract(upload, dry_run=False),
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
        self.query_one("#load-result", Static).update(message + ". Press o to watch them.")
        self.notify(message)

    def _show_error(self, error: RawApiError | str | None) -> None:
        widget = self.query_one("#path-error", Static)
        widget.display = error is not None
        if error is not None:
            self.query_one("#load-result", Static).update("")
            widget.update(f"✖ {error}")
