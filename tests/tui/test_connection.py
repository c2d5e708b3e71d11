"""pixl-tui says plainly when raw is unreachable or refuses the credentials,
in the app and with the exit codes of tui/exit_codes.py."""

from __future__ import annotations

import pytest
from tui_helpers import free_port, settled, text_of

from tui import exit_codes
from tui.app import PixlApp
from tui.cli import main


def test_status_on_a_port_nothing_listens_on_exits_unreachable(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "status"]) == exit_codes.UNREACHABLE
    assert capsys.readouterr().err.strip() == (
        f"pixl-tui: cannot reach the raw plugin at {url}: connection refused (is the stack running?)"
    )


def test_pixl_raw_url_names_the_server(monkeypatch, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PIXL_RAW_URL", url)
    assert main(["failures"]) == exit_codes.UNREACHABLE
    assert f"cannot reach the raw plugin at {url}" in capsys.readouterr().err


async def test_app_says_when_the_server_is_unreachable(make_client):
    client = make_client(f"http://127.0.0.1:{free_port()}", "pixl", "whatever")
    app = PixlApp(client, refresh_seconds=0.2)
    async with app.run_test() as pilot:
        await settled(pilot)
        bar = text_of(app, "#connection")
        assert f"cannot reach the raw plugin at {client.url}: connection refused" in bar
        assert app.screen.query_one("#connection").has_class("-problem")


@pytest.mark.stack
def test_wrong_password_exits_auth_refused(stack, capsys):
    url = stack.settings.raw.url
    username = stack.settings.orthanc_username
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORTHANC_PASSWORD", "not-the-password")
        assert main(["--url", url, "status"]) == exit_codes.AUTH_REFUSED
    assert capsys.readouterr().err.strip() == (
        f"pixl-tui: the raw plugin at {url} refused the credentials of user {username!r} "
        "(HTTP 403); check ORTHANC_USERNAME and ORTHANC_PASSWORD"
    )


@pytest.mark.stack
async def test_app_says_when_the_credentials_are_refused(stack, make_client):
    client = make_client(stack.settings.raw.url, stack.settings.orthanc_username, "wrong")
    app = PixlApp(client, refresh_seconds=0.2)
    async with app.run_test() as pilot:
        await settled(pilot)
        assert "refused the credentials" in text_of(app, "#connection")


@pytest.mark.stack
async def test_app_shows_the_server_it_talks_to(stack, make_client):
    client = make_client(stack.settings.raw.url, *stack.settings.orthanc_auth)
    app = PixlApp(client, refresh_seconds=0.2)
    async with app.run_test() as pilot:
        await settled(pilot)
        bar = text_of(app, "#connection")
        assert bar.startswith(f"raw 0.1.0 at {client.url} · database ok · schema ")
        assert not app.screen.query_one("#connection").has_class("-problem")


@pytest.mark.stack
def test_health_command_against_the_stack(stack, capsys):
    assert main(["--url", stack.settings.raw.url, "health"]) == exit_codes.OK
    assert capsys.readouterr().out.startswith(f"raw 0.1.0 at {stack.settings.raw.url}: database ok")
