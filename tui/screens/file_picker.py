"""Pick an extract from the file system: a CSV file, or an OMOP extract folder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Label

from tui.client import OMOP_SUMMARY_FILE


class FilePickerScreen(ModalScreen[Path | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+o", "use_folder", "Use this folder"),
    ]

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start
        self._folder: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-dialog", classes="dialog"):
            yield Label(
                "Choose a .csv file, or an OMOP extract folder (or its extract_summary.json)",
                classes="dialog-title",
            )
            yield DirectoryTree(self.start, id="tree")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Use this folder (ctrl+o)", id="use-folder", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(event.path)

    def on_directory_tree_directory_selected(self, event: DirectoryTree.DirectorySelected) -> None:
        self._folder = event.path
        if (event.path / OMOP_SUMMARY_FILE).is_file():
            self.dismiss(event.path)

    def on_tree_node_highlighted(self, event: DirectoryTree.NodeHighlighted) -> None:
        entry = event.node.data
        path = getattr(entry, "path", None)
        if path is not None and Path(path).is_dir():
            self._folder = Path(path)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "use-folder":
            self.action_use_folder()
        else:
            self.action_cancel()

    def action_use_folder(self) -> None:
        self.dismiss(self._folder or self.start)

    def action_cancel(self) -> None:
        self.dismiss(None)
