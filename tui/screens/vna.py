"""The archive, seen from raw: is it answering (C-ECHO), and what does it hold (C-FIND)?

What the operator types goes to the archive in the request body and nowhere
else: this screen never logs or notifies it, and the table names no patient
or study (date, modalities, counts, what raw's cache holds).
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, Static

from tui.client import ArchiveStudy, EchoResult, RawApiError
from tui.screens.base import PixlScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.live_table import LiveTable

COLUMNS = (
    ("date", "Study date"),
    ("modality", "Modality"),
    ("series", "Series"),
    ("instances", "Instances"),
    ("cached", "In raw's cache"),
)
# (input id, label, criterion sent to raw)
CRITERIA = (
    ("mrn", "MRN", "mrn"),
    ("accession", "Accession", "accession"),
    ("study-uid", "Study UID", "study_uid"),
    ("date", "Date FROM[-TO]", "date"),
    ("modality", "Modality", "modality"),
)
CACHE_STYLES = {"complete": "green", "partial": "yellow", "no": "dim"}


def study_row(study: ArchiveStudy) -> list[object]:
    return [
        study.study_date or "—",
        ",".join(study.modalities) or "—",
        "—" if study.series is None else str(study.series),
        "—" if study.instances is None else str(study.instances),
        Text(study.cached, style=CACHE_STYLES.get(study.cached, "")),
    ]


class VnaScreen(PixlScreen):
    TITLE = "Archive"
    AUTO_FOCUS = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        # Function keys: the text boxes take ctrl+letters for editing; enter finds too.
        Binding("f2", "echo", "Echo the archive"),
        Binding("f3", "find", "Find"),
        Binding("escape", "leave_input", "Leave input"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        with Vertical(id="vna-form"):
            with Horizontal(id="vna-criteria"):
                for input_id, label, _ in CRITERIA:
                    with Vertical(classes="criterion"):
                        yield Label(label)
                        # Masked like a password: the values stay off the screen's scrollback too.
                        yield Input(id=input_id, password=input_id in ("mrn", "accession"))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Find (enter, f3)", id="find", variant="primary")
                yield Button("Echo (f2)", id="echo")
            yield Static(id="vna-status")
        yield LiveTable(COLUMNS, id="archive-studies")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#archive-studies").display = False

    def action_leave_input(self) -> None:
        self.set_focus(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "find":
            self.action_find()
        elif event.button.id == "echo":
            self.action_echo()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.action_find()

    def _status(self, text: str | Text) -> None:
        self.query_one("#vna-status", Static).update(text)

    def action_echo(self) -> None:
        self._status("C-ECHO …")
        self.call_server(self.client.vna_echo, self._echoed, group="vna", on_error=self._show_archive_error)

    def _echoed(self, echo: EchoResult) -> None:
        if echo.ok:
            self._status(Text(f"✔ {echo.modality} answered the C-ECHO in {echo.seconds * 1000:.0f} ms",
                              style="green"))
        else:
            self._status(Text(f"✖ {echo.modality}: {echo.error}", style="bold red"))

    def action_find(self) -> None:
        criteria = {
            name: self.query_one(f"#{input_id}", Input).value.strip() for input_id, _, name in CRITERIA
        }
        self._status("C-FIND …")
        self.call_server(
            lambda: self.client.vna_find(**criteria), self._found, group="vna", on_error=self._show_archive_error
        )

    def _found(self, studies: list[ArchiveStudy]) -> None:
        table = self.query_one(LiveTable)
        table.display = bool(studies)
        table.show_rows({str(index): study_row(study) for index, study in enumerate(studies)})
        held = sum(study.cached == "complete" for study in studies)
        self._status(
            f"{len(studies)} studies in the archive match, {held} held complete by raw."
            if studies
            else "No study in the archive matches."
        )

    def _show_archive_error(self, error: RawApiError) -> None:
        self._status(Text(f"✖ {error}", style="bold red"))
