"""The PIXL operator console: the App, its key bindings and its command palette."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from tui.client import AuthRefused, Health, RawApiError, RawClient, Unreachable
from tui.screens.base import PixlScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.confirm_load import ConfirmLoadScreen
from tui.screens.controls import ControlsScreen
from tui.screens.export import ExportScreen
from tui.screens.failures import FailuresScreen
from tui.screens.file_picker import FilePickerScreen
from tui.screens.help import HelpScreen
from tui.screens.load import LoadScreen
from tui.screens.overview import OverviewScreen
from tui.screens.plugins import PluginsScreen
from tui.screens.schedule import ScheduleScreen
from tui.screens.vna import VnaScreen

DEFAULT_REFRESH_SECONDS = 2.0
SCREENS_BY_MODE: dict[str, type[PixlScreen]] = {
    "overview": OverviewScreen,
    "load": LoadScreen,
    "failures": FailuresScreen,
    "controls": ControlsScreen,
    "export": ExportScreen,
    "vna": VnaScreen,
    "plugins": PluginsScreen,
}
# The dialogs whose keys the help lists after the screens'.
DIALOGS: tuple[tuple[str, type[Screen]], ...] = (
    ("Confirming a load", ConfirmLoadScreen),
    ("Choosing a file", FilePickerScreen),
    ("Editing the schedule", ScheduleScreen),
    ("Confirming an action", ConfirmScreen),
)


class PixlApp(App[None]):
    CSS_PATH = "pixl.tcss"
    TITLE = "PIXL"
    SUB_TITLE = "operator console"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = dict(SCREENS_BY_MODE)
    DEFAULT_MODE = "overview"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "switch_mode('overview')", "Overview"),
        Binding("l", "switch_mode('load')", "Load"),
        Binding("f", "switch_mode('failures')", "Failures"),
        Binding("c", "switch_mode('controls')", "Controls"),
        Binding("e", "switch_mode('export')", "Export"),
        Binding("v", "switch_mode('vna')", "Archive"),
        Binding("h", "switch_mode('plugins')", "Plugins"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    # None while the server answers; else one plain sentence on what is wrong.
    connection_problem: reactive[str | None] = reactive(None)
    server_info: reactive[str] = reactive("")

    def __init__(self, client: RawClient, *, refresh_seconds: float = DEFAULT_REFRESH_SECONDS):
        super().__init__()
        self.client = client
        self.refresh_seconds = refresh_seconds
        self.server_info = f"Connecting to raw at {client.url} …"

    def on_mount(self) -> None:
        self.run_worker(self._check_health, thread=True, group="health", exclusive=True)

    def _check_health(self) -> None:
        try:
            health = self.client.health()
        except RawApiError as error:
            self.call_from_thread(self.report_error, error)
            return
        self.call_from_thread(self._show_health, health)

    def _show_health(self, health: Health) -> None:
        if not health.healthy:
            self.connection_problem = (
                f"raw at {self.client.url} answers but is not healthy: database {health.database}"
            )
            return
        self.server_info = (
            f"raw {health.version} at {self.client.url} · database {health.database} · "
            f"schema {health.schema_version}"
        )
        self.connection_problem = None

    @staticmethod
    def is_connection_error(error: RawApiError) -> bool:
        return isinstance(error, (Unreachable, AuthRefused))

    def report_error(self, error: RawApiError) -> None:
        if self.is_connection_error(error):
            self.connection_problem = str(error)

    def report_reachable(self) -> None:
        if self.connection_problem is not None:
            self.connection_problem = None
            self.run_worker(self._check_health, thread=True, group="health", exclusive=True)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            sections: list[tuple[str, type]] = [("Everywhere", type(self))]
            sections += [(screen.TITLE or mode, screen) for mode, screen in SCREENS_BY_MODE.items()]
            self.push_screen(HelpScreen([*sections, *DIALOGS]))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Overview", "Extracts and their progress", lambda: self.switch_mode("overview")
        )
        yield SystemCommand(
            "Load an extract",
            "Queue a CSV cohort or an OMOP ES extract",
            lambda: self.switch_mode("load"),
        )
        yield SystemCommand(
            "Failures",
            "Studies that failed or were not found; retry them",
            lambda: self.switch_mode("failures"),
        )
        yield SystemCommand(
            "Controls",
            "Transfer rate, in-flight limit, pause and resume",
            lambda: self.switch_mode("controls"),
        )
        yield SystemCommand(
            "Parquet export",
            "Export an extract's parquet files",
            lambda: self.switch_mode("export"),
        )
        yield SystemCommand(
            "Archive", "C-ECHO the VNA, C-FIND its studies", lambda: self.switch_mode("vna")
        )
        yield SystemCommand(
            "Plugins",
            "Installed plugins, their hooks, and lifecycle hooks that failed",
            lambda: self.switch_mode("plugins"),
        )
        yield SystemCommand(
            "Pause transfers",
            "Stop starting new transfers from the VNA",
            lambda: self._set_paused(True),
        )
        yield SystemCommand(
            "Resume transfers",
            "Start transfers from the VNA again",
            lambda: self._set_paused(False),
        )
        yield SystemCommand(
            "Retry all failures", "Queue every failed or not-found study again", self._retry_all
        )
        yield SystemCommand("Keys", "Every key binding of every screen", self.action_help)

    def _set_paused(self, paused: bool) -> None:
        self.switch_mode("controls")
        self.call_after_refresh(lambda: self.screen.set_paused(paused))  # type: ignore[attr-defined]

    def _retry_all(self) -> None:
        self.switch_mode("failures")
        self.call_after_refresh(lambda: self.screen.action_retry_all())  # type: ignore[attr-defined]
