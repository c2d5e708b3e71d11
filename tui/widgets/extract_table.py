"""The overview's table of extracts, updated in place so a live refresh never flickers."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.client import ALL_STATES, PROBLEM_STATES, ExtractStatus
from tui.widgets.formatting import duration, progress_bar, rate, shorten, when
from tui.widgets.live_table import LiveTable

COLUMNS = (
    ("project", "Project"),
    ("extract", "Extract"),
    ("progress", "Progress"),
    ("done", "Done"),
    ("problems", "Failed"),
    ("not_found", "Not found"),
    ("priority", "Prio"),
    ("rate", "Per min"),
    ("eta", "ETA"),
    ("error", "Last error"),
)
ERROR_WIDTH = 30


def _count(status: ExtractStatus, state: str) -> Text:
    count = status.counts.get(state, 0)
    return Text(str(count), style="bold red" if count else "")


def extract_row(status: ExtractStatus) -> list[object]:
    eta = "done" if status.done else duration(status.eta_seconds)
    if status.cancelled_at and not status.done:
        eta = "cancelled"
    priority = f"{status.priority}" + (" practice" if status.practice else "")
    return [
        status.project,
        status.extract,
        progress_bar(status.progress, problems=bool(status.problems)),
        f"{status.finished}/{status.total}",
        # The same words as the counts line below the table: failed is failed, not_found apart.
        _count(status, "failed"),
        _count(status, "not_found"),
        priority,
        rate(status.throughput_per_minute),
        eta,
        Text(shorten(status.last_error, ERROR_WIDTH), style="red"),
    ]


def extract_details(status: ExtractStatus) -> Text:
    """Everything about one extract: all state counts and the whole last error."""
    text = Text()
    text.append(f"{status.project} / {status.extract}", style="bold")
    if status.loaded_at:
        text.append(f"   loaded {when(status.loaded_at)}", style="dim")
    text.append(f"   priority {status.priority}", style="dim")
    if status.practice:
        text.append("   practice run: nothing is exported", style="bold yellow")
    if status.cancelled_at:
        text.append(f"   cancelled {when(status.cancelled_at)}", style="bold yellow")
    text.append("\n")
    text.append(f"{status.active} on their way, {status.counts.get('queued', 0)} queued\n")
    present = [state for state in ALL_STATES if status.counts.get(state)]
    for index, state in enumerate(present):
        count = status.counts[state]
        text.append(" · " if index else "", style="dim")
        text.append(f"{state} ", style="dim")
        text.append(str(count), style="bold red" if state in PROBLEM_STATES else "")
    if status.last_error:
        at = f" ({when(status.last_error_at)})" if status.last_error_at else ""
        text.append(f"\nLast error{at}: ", style="bold red")
        text.append(status.last_error)
    return text


class ExtractTable(LiveTable):
    """One row per (project, extract), keyed by "project/extract"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(COLUMNS, **kwargs)

    def show(self, extracts: list[ExtractStatus]) -> None:
        self.show_rows({status.key: extract_row(status) for status in extracts})
