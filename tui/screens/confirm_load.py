"""The summary an operator confirms before an extract is queued."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from tui.client import LoadSummary


def summary_table(summary: LoadSummary) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Project", summary.project)
    table.add_row("Extract", summary.extract)
    studies = str(summary.studies)
    if summary.limit and summary.studies_in_extract not in (None, summary.studies):
        studies += f" (the first of {summary.studies_in_extract}: limit)"
    table.add_row("Studies", studies)
    table.add_row("To queue", str(summary.queued))
    table.add_row("Already exported", str(summary.already_exported))
    table.add_row("Modalities", ", ".join(summary.modalities) or "—")
    destination = ", ".join(f"{kind}: {name}" for kind, name in summary.destination.items())
    table.add_row("Destination", destination or "—")
    table.add_row("Priority", f"{summary.priority} (5 is fetched first)")
    if summary.practice:
        table.add_row(
            Text("Practice run", style="bold yellow"),
            "fetched and de-identified, nothing exported, nothing kept",
        )
    if summary.nothing_added():
        table.add_row(Text("Nothing to do", style="bold yellow"), summary.nothing_added())
    for problem in summary.destination_problems:
        # Not a refusal: fetching can start while someone fixes the destination's settings.
        table.add_row(Text("Problem", style="bold red"), Text(problem))
    return table


class ConfirmLoadScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Queue"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, summary: LoadSummary) -> None:
        super().__init__()
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Label("Queue this extract?", classes="dialog-title")
            yield Static(summary_table(self.summary), id="summary")
            with Horizontal(classes="dialog-buttons"):
                verb = "Practise on" if self.summary.practice else "Queue"
                yield Button(
                    f"{verb} {self.summary.queued} studies (y)", id="yes", variant="primary"
                )
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
