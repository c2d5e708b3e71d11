"""Helpers for tests that drive a real stack: counting what the archive received."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import requests

from orthanc_plugins.common.orthanc_api import OrthancApi


class VnaLog:
    """Counts the C-FIND and C-MOVE requests the VNA received from raw, from its own log:
    what the archive received, not what raw meant to send."""

    def __init__(self, vna: OrthancApi, log_path: Path, raw_aet: str):
        self.vna = vna
        self.path = log_path
        self.raw_aet = raw_aet
        self.mark()

    def mark(self) -> None:
        self.vna.put("/tools/log-level", b"verbose")
        self.offset = self.path.stat().st_size

    def counts(self) -> tuple[int, int]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        return (text.count(f"Incoming Find request from AET {self.raw_aet}"),
                text.count(f"Incoming Move request from AET {self.raw_aet}"))


class RelayHandler(http.server.BaseHTTPRequestHandler):
    """A test proxy's handler: `relay` sends back what the real server answered."""

    def relay(self, answer: requests.Response) -> None:
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args) -> None:
        pass


class LoopbackServer:
    """An HTTP server of the test's own on a free loopback port, for the `with` block."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
