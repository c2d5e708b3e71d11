"""One line under the header saying whether raw is reachable, in plain words."""

from __future__ import annotations

from textual.widgets import Static


class ConnectionBar(Static):
    """Mirrors the app's `connection_problem` and `server_info`, so every screen
    shows the same verdict without asking the server itself."""

    def on_mount(self) -> None:
        self.watch(self.app, "connection_problem", self._render_state)
        self.watch(self.app, "server_info", self._render_state)

    def _render_state(self, _value: object = None) -> None:
        problem = self.app.connection_problem  # type: ignore[attr-defined]
        self.set_class(problem is not None, "-problem")
        if problem is not None:
            self.update(f"⚠ {problem}")
        else:
            self.update(self.app.server_info)  # type: ignore[attr-defined]
