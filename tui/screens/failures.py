"""Failures: studies that failed or were not found, why, and a way to retry them."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static

from tui.client import Failure
from tui.screens.base import PixlScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.formatting import when
from tui.widgets.live_table import LiveTable

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
        when(failure.updated_at),
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
        yield LiveTable(COLUMNS, id="failures")
        yield Footer()

    def reload(self) -> None:
        self.call_server(self.client.failures, self.show)

    def show(self, failures: list[Failure]) -> None:
        self.query_one(LiveTable).show_rows(
            {str(failure.job_id): failure_row(failure) for failure in failures}
        )
        not_found = sum(failure.state == "not_found" for failure in failures)
        summary = self.query_one("#summary", Static)
        summary.update(
            f"{len(failures)} studies need attention: {len(failures) - not_found} failed, "
            f"{not_found} not found. r retries the highlighted one, a retries all."
            if failures
            else "No failures."
        )

    def action_retry_one(self) -> None:
        key = self.query_one(LiveTable).highlighted_key()
        if key is None:
            self.notify("Nothing to retry.")
            return
        job_id = int(key)
        self.call_server(lambda: self.client.retry([job_id]), self._retried, group="retry")

    def action_retry_all(self) -> None:
        self.call_server(lambda: self.client.retry(), self._retried, group="retry")

    def _retried(self, count: int) -> None:
        self.notify(f"Queued {count} {'study' if count == 1 else 'studies'} again.")
        self.reload()
