"""The overview's table of extracts, updated in place so a live refresh never flickers."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tui.client import ALL_STATES, PROBLEM_STATES, ExtractStatus
from tui.widgets.formatting import duration, progress_bar, rate, shorten

COLUMNS = (
    ("project", "Project"),
    ("extract", "Extract"),
    ("progress", "Progress"),
    ("done", "Done"),
    ("problems", "Failed"),
    ("rate", "Per min"),
    ("eta", "ETA"),
    ("error", "Last error"),
)
ERROR_WIDTH = 30


def extract_row(status: ExtractStatus) -> dict[str, object]:
    problems = Text(str(status.problems), style="bold red" if status.problems else "")
    eta = "done" if status.done else duration(status.eta_seconds)
    return {
        "project": status.project,
        "extract": status.extract,
        "progress": progress_bar(status.progress, problems=bool(status.problems)),
        "done": f"{status.finished}/{status.total}",
        "problems": problems,
        "rate": rate(status.throughput_per_minute),
        "eta": eta,
        "error": Text(shorten(status.last_error, ERROR_WIDTH), style="red"),
    }


def extract_details(status: ExtractStatus) -> Text:
    """Everything about one extract: all state counts and the whole last error."""
    text = Text()
    text.append(f"{status.project} / {status.extract}", style="bold")
    if status.loaded_at:
        text.append(f"   loaded {status.loaded_at}", style="dim")
    text.append("\n")
    text.append(f"{status.active} on their way, {status.counts.get('queued', 0)} queued\n")
    present = [state for state in ALL_STATES if status.counts.get(state)]
    for index, state in enumerate(present):
        count = status.counts[state]
        text.append(" · " if index else "", style="dim")
        text.append(f"{state} ", style="dim")
        text.append(str(count), style="bold red" if state in PROBLEM_STATES else "")
    if status.last_error:
        when = f" ({status.last_error_at})" if status.last_error_at else ""
        text.append(f"\nLast error{when}: ", style="bold red")
        text.append(status.last_error)
    return text


class ExtractTable(DataTable):
    """One row per (project, extract), keyed by "project/extract"."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, extracts: list[ExtractStatus]) -> None:
        wanted = {status.key: status for status in extracts}
        for row_key in list(self.rows):
            if row_key.value not in wanted:
                self.remove_row(row_key)
        existing = {row_key.value for row_key in self.rows}
        for key, status in wanted.items():
            cells = extract_row(status)
            if key in existing:
                for column, value in cells.items():
                    self.update_cell(key, column, value, update_width=True)
            else:
                self.add_row(*cells.values(), key=key)
