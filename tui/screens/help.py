"""Every key of every screen, read from the bindings themselves so it never drifts."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

INTRO = (
    "pixl-tui drives the raw plugin of PIXL. Letters switch screens; inside a text box,"
    " press esc first. ctrl+p opens the command palette."
)


def bindings_table(title: str, bindings: list[Binding]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        show_header=False,
        padding=(0, 2),
    )
    table.add_column(style="bold cyan", min_width=8)
    table.add_column()
    for binding in bindings:
        table.add_row(_key_name(binding), binding.description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, sections: list[tuple[str, type]]) -> None:
        """`sections`: (title, class) pairs; each class's own bindings make a table."""
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("PIXL operator console: keys", classes="dialog-title")
            yield Static(INTRO, id="help-intro")
            for title, owner in self.sections:
                own = _described_bindings(owner)
                if own:
                    yield Static(bindings_table(title, own))
            yield Label("esc closes this help", classes="dim")


def _described_bindings(owner: type) -> list[Binding]:
    """The bindings a class declares itself (not inherited ones) that have a description."""
    items = owner.__dict__.get("BINDINGS", [])
    bindings = [item if isinstance(item, Binding) else Binding(*item) for item in items]
    return [binding for binding in bindings if binding.description]


def _key_name(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return " / ".join(
        {"escape": "esc", "question_mark": "?"}.get(key, key) for key in binding.key.split(",")
    )
