"""Kept-alive connections are not reused once the server may be closing them.

Orthanc closes a connection idle for one second; a request sent as that close is in
flight ends in `RemoteDisconnected` (seen in CI: the demo polling raw once a second
through stunnel). The server here makes that race certain: a request arriving on a
connection that has been idle past the limit is dropped unanswered, as Orthanc's
closing socket drops it."""

from __future__ import annotations

import http.server
import json
import time

import pytest
import requests
from stack_support import LoopbackServer

from orthanc_plugins.common.http_session import (
    MAX_IDLE_SECONDS,
    ORTHANC_KEEP_ALIVE_SECONDS,
    idle_limited_session,
)
from orthanc_plugins.common.orthanc_api import HttpOrthanc, OrthancError
from tui.client import ClientConfig, RawClient, Unreachable

# Longer than our limit, shorter than Orthanc's: the connection is still open, and
# the server drops what arrives on it.
IDLE_BETWEEN_REQUESTS = (MAX_IDLE_SECONDS + ORTHANC_KEEP_ALIVE_SECONDS) / 2


class ClosingAtIdleHandler(http.server.BaseHTTPRequestHandler):
    """Answers `{"healthy": true}` with keep-alive, and counts its connections."""

    protocol_version = "HTTP/1.1"
    connections = 0
    drops_after = MAX_IDLE_SECONDS  # idle seconds past which a request is dropped

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1
        self.answered_at: float | None = None

    def do_GET(self) -> None:
        if self.answered_at is not None and time.monotonic() - self.answered_at > self.drops_after:
            self.close_connection = True  # dropped unanswered, as by Orthanc's idle close
            return
        body = json.dumps({"service": "raw", "healthy": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.answered_at = time.monotonic()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def closing_server():
    handler = type("Handler", (ClosingAtIdleHandler,), {"connections": 0})
    with LoopbackServer(handler) as server:
        server.handler = handler
        yield server


def test_a_plain_session_loses_the_request_sent_as_the_server_closes(closing_server):
    # The control: without the idle limit the race is lost, so the tests below can fail.
    session = requests.Session()
    session.get(closing_server.url + "/system", timeout=10)
    time.sleep(IDLE_BETWEEN_REQUESTS)
    with pytest.raises(requests.ConnectionError):
        session.get(closing_server.url + "/system", timeout=10)


def test_a_connection_idle_past_the_limit_is_replaced(closing_server):
    session = idle_limited_session()
    for _ in range(3):
        assert session.get(closing_server.url + "/system", timeout=10).json()["healthy"]
        time.sleep(IDLE_BETWEEN_REQUESTS)
    assert closing_server.handler.connections == 3


def test_a_connection_in_steady_use_is_kept(closing_server):
    # Limits far beyond any pause between two requests, however slow the machine.
    closing_server.handler.drops_after = 60
    session = idle_limited_session(max_idle=60)
    for _ in range(5):
        session.get(closing_server.url + "/system", timeout=10)
    assert closing_server.handler.connections == 1


def test_pixl_tui_and_anon_clients_survive_the_race(closing_server):
    client = RawClient(ClientConfig(closing_server.url, "pixl", "secret", plain_http_loopback=True))
    orthanc = HttpOrthanc(closing_server.url, ("pixl", "secret"), verify=False)
    for _ in range(2):
        try:
            assert client.health().healthy
            assert json.loads(orthanc.get("/system"))["healthy"]
        except (Unreachable, OrthancError) as exc:
            pytest.fail(f"a request went out on a connection the server was closing: {exc}")
        time.sleep(IDLE_BETWEEN_REQUESTS)
