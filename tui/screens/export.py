"""Parquet export: start an extract's export, watch it, see where the files went."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Header, Select, Static

from tui.client import Export, ExtractStatus
from tui.screens.base import PixlScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.formatting import when
from tui.widgets.live_table import LiveTable

STATE_STYLES = {"running": "yellow", "done": "green", "failed": "bold red"}
COLUMNS = (
    ("id", "Export"),
    ("project", "Project"),
    ("extract", "Extract"),
    ("state", "State"),
    ("started", "Started"),
    ("finished", "Finished"),
    ("where", "Files"),
    ("uploaded", "Uploaded to"),
)


def export_row(export: Export) -> list[object]:
    return [
        str(export.export_id),
        export.project,
        export.extract,
        Text(export.state, style=STATE_STYLES.get(export.state, "")),
        when(export.started_at) if export.started_at else "",
        when(export.finished_at) if export.finished_at else "",
        export.export_dir or "",
        export.uploaded_to or "",
    ]


def export_details(export: Export) -> Text:
    text = Text()
    text.append(f"Export {export.export_id}: {export.project} / {export.extract} ", style="bold")
    text.append(export.state, style=STATE_STYLES.get(export.state, ""))
    text.append(f"\nFiles written to: {export.export_dir or '—'}")
    text.append(
        f"\nDestination: {export.destination or '—'}   uploaded to: {export.uploaded_to or '—'}"
    )
    if export.error:
        text.append("\nError: ", style="bold red")
        text.append(export.error)
    return text


class ExportScreen(PixlScreen):
    TITLE = "Parquet export"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("s", "start", "Start export")]

    def __init__(self) -> None:
        super().__init__()
        self._exports: dict[str, Export] = {}
        self._choices: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        with Horizontal(id="export-row"):
            yield Select[tuple[str, str]]([], prompt="Extract to export", id="extract")
            yield Button("Start export (s)", id="start", variant="primary")
        yield LiveTable(COLUMNS, id="exports")
        yield Static(id="export-details")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#export-details").display = False

    def reload(self) -> None:
        self.call_server(self.client.extracts, self._show_choices, group="choices")
        self.call_server(self.client.exports, self.show)

    def _show_choices(self, extracts: list[ExtractStatus]) -> None:
        choices = [(status.project, status.extract) for status in extracts]
        if choices != self._choices:
            self._choices = choices
            select = self.query_one(Select)
            selected = select.value
            select.set_options(
                (f"{project} / {extract}", (project, extract)) for project, extract in choices
            )
            if selected in choices:
                select.value = selected
            elif len(choices) == 1:
                select.value = choices[0]

    def show(self, exports: list[Export]) -> None:
        self._exports = {str(export.export_id): export for export in exports}
        self.query_one(LiveTable).show_rows(
            {key: export_row(export) for key, export in self._exports.items()}
        )
        self._show_details()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def _show_details(self) -> None:
        details = self.query_one("#export-details", Static)
        key = self.query_one(LiveTable).highlighted_key()
        export = self._exports.get(key) if key is not None else None
        details.display = export is not None
        if export is not None:
            details.update(export_details(export))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def action_start(self) -> None:
        choice = self.query_one(Select).value
        if not isinstance(choice, tuple):
            self.notify("Choose an extract to export first.", severity="warning")
            return
        project, extract = choice
        self.call_server(
            lambda: self.client.start_export(project, extract), self._started, group="start"
        )

    def _started(self, export: Export) -> None:
        self.notify(
            f"Export {export.export_id} of {export.project} / {export.extract}: {export.state}."
        )
        self.reload()
