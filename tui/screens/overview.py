"""Extracts overview: per project and extract, where every study stands."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from tui.client import CancelResult, ExtractStatus, PipelineStatus, RawApiError
from tui.report_files import WrittenReport, write_report
from tui.screens.base import PixlScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.extract_table import ExtractTable, extract_details
from tui.widgets.formatting import pipeline_line


class OverviewScreen(PixlScreen):
    TITLE = "Extracts"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign", "priority(1)", "Prio up", key_display="+"),
        Binding("minus", "priority(-1)", "Prio down", key_display="-"),
        Binding("r", "report", "Report"),
        Binding("x", "cancel_extract", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._extracts: dict[str, ExtractStatus] = {}
        # Priorities asked for and not yet seen in a refresh: + pressed twice means two steps.
        self._asked_priority: dict[str, int] = {}
        self._sending_priority = False

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
        for status in extracts:
            if self._asked_priority.get(status.key) == status.priority:
                del self._asked_priority[status.key]
        table = self.query_one(ExtractTable)
        table.show(extracts)
        self.query_one("#empty").display = not extracts
        table.display = bool(extracts)
        self._show_details()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def _show_details(self) -> None:
        details = self.query_one("#details", Static)
        status = self.highlighted()
        details.display = status is not None
        if status is not None:
            details.update(extract_details(status))

    def highlighted(self) -> ExtractStatus | None:
        key = self.query_one(ExtractTable).highlighted_key()
        return self._extracts.get(key) if key is not None else None

    def action_priority(self, step: int) -> None:
        status = self.highlighted()
        if status is None:
            return
        current = self._asked_priority.get(status.key, status.priority)
        priority = min(5, max(1, current + step))
        if priority == current:
            self.notify(f"Priority is already {priority}: 1 to 5, 5 is fetched first.")
            return
        self._asked_priority[status.key] = priority
        if not self._sending_priority:
            self._send_priority(status, priority)

    def _send_priority(self, status: ExtractStatus, priority: int) -> None:
        # One change at a time, so that the server ends with the last one asked for.
        self._sending_priority = True
        self.call_server(
            lambda: self.client.set_priority(status.project, status.extract, priority),
            lambda value: self._priority_set(status, value),
            group="priority",
            on_error=self._priority_failed,
        )

    def _priority_set(self, status: ExtractStatus, priority: int) -> None:
        self._sending_priority = False
        asked = self._asked_priority.get(status.key, priority)
        if asked != priority:
            self._send_priority(status, asked)
            return
        self.notify(f"{status.project} / {status.extract}: priority {priority}.")
        self.reload()

    def _priority_failed(self, error: RawApiError) -> None:
        self._sending_priority = False
        self._asked_priority.clear()
        self.notify(str(error), severity="error", timeout=8)

    def action_report(self) -> None:
        status = self.highlighted()
        if status is None:
            return
        self.call_server(
            lambda: write_report(self.client, status.project, status.extract, Path.cwd()),
            self._report_written,
            group="report",
        )

    def _report_written(self, written: WrittenReport) -> None:
        self.notify(f"Report written: {written.html_path} (and .json)", timeout=10)

    def action_cancel_extract(self) -> None:
        status = self.highlighted()
        if status is None:
            return
        queued = status.counts.get("queued", 0)
        question = (
            f"Cancel {status.project} / {status.extract}?\n"
            f"Its {queued} queued studies are withdrawn and will not be fetched; the "
            f"{status.active} on their way finish; what was exported stays recorded. "
            "A cancelled extract cannot be resumed."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.call_server(
                    lambda: self.client.cancel(status.project, status.extract),
                    self._cancelled,
                    group="cancel",
                )

        self.app.push_screen(ConfirmScreen("Cancel this extract?", question, "Cancel it"), answered)

    def _cancelled(self, result: CancelResult) -> None:
        self.notify(
            f"Cancelled {result.project} / {result.extract}: {result.withdrawn} withdrawn, "
            f"{result.in_flight} finishing."
        )
        self.reload()
