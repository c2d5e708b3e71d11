"""Extracts overview: per project and extract, where every study stands."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from tui.client import ExtractStatus, PipelineStatus
from tui.screens.base import PixlScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.extract_table import ExtractTable, extract_details
from tui.widgets.formatting import pipeline_line


class OverviewScreen(PixlScreen):
    TITLE = "Extracts"

    def __init__(self) -> None:
        super().__init__()
        self._extracts: dict[str, ExtractStatus] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        yield Static(id="pipeline")
        yield Static("No extract loaded yet: press [b]l[/b] to load one.", id="empty")
        yield ExtractTable(id="extracts")
        yield Static(id="details")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        # Nothing to show until the server first answers.
        for selector in ("#empty", "#extracts", "#details"):
            self.query_one(selector).display = False

    def reload(self) -> None:
        self.call_server(self.client.extracts, self.show)
        self.call_server(self.client.pipeline, self.show_pipeline, group="pipeline")

    def show_pipeline(self, status: PipelineStatus) -> None:
        self.query_one("#pipeline", Static).update(pipeline_line(status))

    def show(self, extracts: list[ExtractStatus]) -> None:
        self._extracts = {status.key: status for status in extracts}
        table = self.query_one(ExtractTable)
        table.show(extracts)
        self.query_one("#empty").display = not extracts
        table.display = bool(extracts)
        self._show_details()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def _show_details(self) -> None:
        details = self.query_one("#details", Static)
        key = self.query_one(ExtractTable).highlighted_key()
        status = self._extracts.get(key) if key is not None else None
        details.display = status is not None
        if status is not None:
            details.update(extract_details(status))
