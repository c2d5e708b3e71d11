"""The real `pixl-tui` binary in a real terminal (tmux), against the real stack."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tui_helpers import free_port

from tui.client import prepare_upload

PIXL_TUI = Path(sys.executable).with_name("pixl-tui")
WAIT_SECONDS = 60


class Tmux:
    """A tmux server of the test's own (its own socket), so no one else's is touched."""

    def __init__(self, socket_name: str):
        self.socket_name = socket_name

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket_name, "-f", "/dev/null", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def start_pixl_tui(self, environment: dict[str, str]) -> None:
        """pixl-tui as the only program of a 140x40 session "pixl", with `environment`."""
        settings = " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items())
        command = f"env -u COLUMNS -u LINES TERM=xterm-256color {settings} {shlex.quote(str(PIXL_TUI))}"
        self.run("new-session", "-d", "-s", "pixl", "-x", "140", "-y", "40", command)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "pixl")

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen shows:\n{self.screen()}")

    def wait_until_closed(self) -> None:
        """The session ends when pixl-tui, its only program, exits."""
        deadline = time.monotonic() + WAIT_SECONDS
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.alive(), f"pixl-tui did not quit; the screen shows:\n{self.screen()}"

    def alive(self) -> bool:
        result = subprocess.run(
            ["tmux", "-L", self.socket_name, "has-session", "-t", "pixl"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0


@pytest.fixture
def tmux():
    terminal = Tmux(f"pixl-tui-test-{os.getpid()}")
    yield terminal
    subprocess.run(
        ["tmux", "-L", terminal.socket_name, "kill-server"], capture_output=True, check=False
    )


def test_pixl_tui_binary_says_when_raw_is_unreachable(tmux):
    url = f"http://127.0.0.1:{free_port()}"
    tmux.start_pixl_tui({"PIXL_RAW_URL": url})
    tmux.wait_for(
        f"cannot reach the raw plugin at {url}: connection refused (is the stack running?)"
    )
    tmux.run("send-keys", "-t", "pixl", "q")
    tmux.wait_until_closed()


@pytest.mark.stack
def test_pixl_tui_binary_shows_the_stack_in_a_terminal(
    tmux, stack, stack_env, raw_client, write_cohort
):
    summary = raw_client.load_extract(prepare_upload(write_cohort(studies=2)), dry_run=False)
    tmux.start_pixl_tui(stack_env)

    tmux.wait_for(f"raw 0.1.0 at {stack.settings.raw.url} · database ok")
    screen = tmux.wait_for(summary.extract)
    assert summary.project[:18] in screen  # long names are cut to the column's width
    assert "o Overview" in screen and "? Help" in screen  # the footer's bindings

    tmux.run("send-keys", "-t", "pixl", "?")
    tmux.wait_for("PIXL operator console: keys")
    tmux.run("send-keys", "-t", "pixl", "?")  # ? closes the help too (esc + c reads as alt+c)
    tmux.run("send-keys", "-t", "pixl", "c")
    tmux.wait_for("In-flight limit")
    tmux.run("send-keys", "-t", "pixl", "q")
    tmux.wait_until_closed()
