"""Failures: studies that failed or were not found, why, and a way to retry them."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from tui.client import Failure
from tui.screens.base import PixlScreen
from tui.widgets.connection_bar import ConnectionBar

COLUMNS = (
    ("job", "Job"),
    ("project", "Project"),
    ("extract", "Extract"),
    ("state", "State"),
    ("attempts", "Attempts"),
    ("updated", "Updated"),
    ("reason", "Reason"),
)


def failure_row(failure: Failure) -> list[object]:
    return [
        str(failure.job_id),
        failure.project,
        failure.extract,
        Text(failure.state, style="red" if failure.state == "failed" else "yellow"),
        str(failure.attempts),
        failure.updated_at or "",
        failure.last_error or "",
    ]


class FailuresScreen(PixlScreen):
    TITLE = "Failures"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry_one", "Retry this"),
        Binding("a", "retry_all", "Retry all"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        yield Static("No failures.", id="summary")
        yield DataTable(id="failures", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)

    def reload(self) -> None:
        self.call_server(self.client.failures, self.show)

    def show(self, failures: list[Failure]) -> None:
        table = self.query_one(DataTable)
        wanted = {str(failure.job_id): failure for failure in failures}
        for row_key in list(table.rows):
            if row_key.value not in wanted:
                table.remove_row(row_key)
        for key, failure in wanted.items():
            cells = failure_row(failure)
            if key in table.rows:
                for (column, _label), value in zip(COLUMNS, cells):
                    table.update_cell(key, column, value, update_width=True)
            else:
                table.add_row(*cells, key=key)
        not_found = sum(failure.state == "not_found" for failure in failures)
        summary = self.query_one("#summary", Static)
        summary.update(
            f"{len(failures)} studies need attention: {len(failures) - not_found} failed, "
            f"{not_found} not found. r retries the highlighted one, a retries all."
            if failures
            else "No failures."
        )

    def action_retry_one(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            self.notify("Nothing to retry.")
            return
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        job_id = int(str(row_key.value))
        self.call_server(lambda: self.client.retry([job_id]), self._retried, group="retry")

    def action_retry_all(self) -> None:
        self.call_server(lambda: self.client.retry(), self._retried, group="retry")

    def _retried(self, count: int) -> None:
        self.notify(f"Queued {count} {'study' if count == 1 else 'studies'} again.")
        self.reload()
