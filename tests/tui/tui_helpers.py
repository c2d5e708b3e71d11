"""Small helpers shared by the pixl-tui tests."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static
from textual.worker import WorkerCancelled

from tui.app import PixlApp

WAIT_SECONDS = 60.0


def free_port() -> int:
    """A port nothing listens on: bound once by us, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def text_of(app: PixlApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settled(pilot: Pilot) -> None:
    """Let every pending server call finish and the screen catch up."""
    for _ in range(100):
        try:
            await pilot.app.workers.wait_for_complete()
            break
        except WorkerCancelled:  # a refresh replaced by a newer one: wait for that one
            continue
    await pilot.pause()


async def wait_until(
    pilot: Pilot, condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS
) -> None:
    """Poll while the app keeps refreshing itself; fail naming what never happened."""
    for _ in range(int(seconds / 0.2)):
        await settled(pilot)
        if condition():
            return
        await pilot.pause(0.2)
    raise AssertionError(f"gave up waiting: {what}")


def screen_text(app: PixlApp) -> str:
    """What the terminal shows, as plain text (rendered the way Textual's screenshots are)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()
