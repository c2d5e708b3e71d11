"""Plugins: what is installed, which hooks each implements, and the lifecycle hooks that
failed lately (a site's step after export: the studies stay exported, the step did not run)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from tui.client import HookError, Plugin, PluginListing
from tui.screens.base import PixlScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.formatting import when
from tui.widgets.live_table import LiveTable

PLUGIN_COLUMNS = (
    ("name", "Plugin"),
    ("hooks", "Hooks"),
    ("destinations", "Destinations"),
)
ERROR_COLUMNS = (
    ("recorded", "When"),
    ("hook", "Hook"),
    ("plugin", "Plugin"),
    ("extract", "Project/extract"),
    ("job", "Job"),
    ("error", "Error"),
)
HOOK_PREFIX = "pixl_"


def plugin_row(plugin: Plugin) -> list[object]:
    return [
        plugin.name,
        ", ".join(hook.removeprefix(HOOK_PREFIX) for hook in plugin.hooks) or "—",
        ", ".join(plugin.destinations) or "—",
    ]


def hook_error_row(error: HookError) -> list[object]:
    return [
        when(error.recorded_at),
        error.hook.removeprefix(HOOK_PREFIX),
        error.plugin,
        f"{error.project}/{error.extract}",
        "—" if error.job_id is None else str(error.job_id),
        error.error,
    ]


def _error_key(error: HookError) -> str:
    return f"{error.recorded_at}/{error.hook}/{error.plugin}/{error.job_id}"


class PluginsScreen(PixlScreen):
    TITLE = "Plugins"

    def __init__(self) -> None:
        super().__init__()
        self._errors: dict[str, HookError] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBar(id="connection")
        yield Static("Asking raw for its plugins …", id="plugins-summary")
        yield LiveTable(PLUGIN_COLUMNS, id="plugins")
        yield Static("No lifecycle hook has failed lately.", id="hook-errors-summary")
        yield LiveTable(ERROR_COLUMNS, id="hook-errors")
        yield Static(id="hook-error-details")
        yield Footer()

    def reload(self) -> None:
        self.call_server(self.client.plugins, self.show)

    def show(self, listing: PluginListing) -> None:
        self.query_one("#plugins", LiveTable).show_rows(
            {plugin.name: plugin_row(plugin) for plugin in listing.plugins}
        )
        destinations = sum(len(plugin.destinations) for plugin in listing.plugins)
        self.query_one("#plugins-summary", Static).update(
            f"{len(listing.plugins)} plugins installed, providing {destinations} destinations."
        )
        self._errors = {_error_key(error): error for error in listing.hook_errors}
        self.query_one("#hook-errors", LiveTable).show_rows(
            {key: hook_error_row(error) for key, error in self._errors.items()}
        )
        errors = len(listing.hook_errors)
        self.query_one("#hook-errors-summary", Static).update(
            f"{errors} lifecycle hook {'call' if errors == 1 else 'calls'} failed lately, newest "
            "first. The studies stay exported; the site's step did not run for them."
            if errors
            else "No lifecycle hook has failed lately."
        )
        self._show_error_details()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_error_details()

    def _show_error_details(self) -> None:
        """The highlighted error whole: a long message is cut in its table cell."""
        key = self.query_one("#hook-errors", LiveTable).highlighted_key()
        error = self._errors.get(key) if key is not None else None
        details = self.query_one("#hook-error-details", Static)
        details.display = error is not None
        if error is not None:
            details.update(error.sentence())
