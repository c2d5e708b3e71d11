"""What every screen of pixl-tui shares: the client, a live refresh, and how a
call to the server runs off the UI thread and reports its errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from textual.screen import Screen

from tui.client import RawApiError, RawClient

if TYPE_CHECKING:
    from tui.app import PixlApp

T = TypeVar("T")


class PixlScreen(Screen[None]):
    """A screen that shows server data and refreshes it while it is visible."""

    @property
    def pixl(self) -> PixlApp:
        return self.app  # type: ignore[return-value]

    @property
    def client(self) -> RawClient:
        return self.pixl.client

    def on_mount(self) -> None:
        self.set_interval(self.pixl.refresh_seconds, self._tick)

    def on_screen_resume(self) -> None:
        self.reload()

    def _tick(self) -> None:
        if self.is_current:
            self.reload()

    def reload(self) -> None:
        """Fetch this screen's data again; screens that show server data override it."""

    def call_server(
        self,
        call: Callable[[], T],
        on_result: Callable[[T], Any],
        *,
        group: str = "refresh",
        on_error: Callable[[RawApiError], Any] | None = None,
    ) -> None:
        """Run `call` in a thread; hand its result (or error) back on the UI thread.
        Connection and credential problems always reach the connection bar as well."""

        def run() -> None:
            try:
                result = call()
            except RawApiError as error:
                self.app.call_from_thread(self._call_failed, error, on_error)
                return
            self.app.call_from_thread(self._call_succeeded, result, on_result)

        self.run_worker(run, thread=True, group=group, exclusive=True)

    def _call_succeeded(self, result: T, on_result: Callable[[T], Any]) -> None:
        self.pixl.report_reachable()
        on_result(result)

    def _call_failed(self, error: RawApiError, on_error: Callable[[RawApiError], Any] | None) -> None:
        self.pixl.report_error(error)
        if on_error is not None:
            on_error(error)
        elif not self.pixl.is_connection_error(error):
            self.notify(str(error), severity="error", timeout=8)
