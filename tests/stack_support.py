"""Helpers for tests that drive a real stack: counting what the archive received,
Orthanc servers of a test's own, raw's archive entry pointed elsewhere."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import requests

from orthanc_plugins.common.orthanc_api import OrthancApi
from orthanc_plugins.common.settings import OrthancNode, Settings
from pixl_stack.processes import ManagedProcess, StackError, wait_until
from pixl_stack.stack import ORTHANC_BINARY


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


def answers(url: str, auth: tuple[str, str]) -> bool:
    """Whether `url` answers HTTP 200 now (plain HTTP, as a test's own servers speak)."""
    try:
        return requests.get(url, auth=auth, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def start_orthanc(name: str, node: OrthancNode, config: dict, settings: Settings,
                  work: Path) -> ManagedProcess:
    """An Orthanc of the test's own with `config`, its files under `work`, answering
    on `node.url`; stopped by the caller (by PID, through ManagedProcess)."""
    config_file = work / f"{name}.json"
    config_file.write_text(json.dumps(config))
    process = ManagedProcess(name, work / "run", work / "logs")
    process.start([ORTHANC_BINARY, f"--logfile={process.log_file}", str(config_file)],
                  # the configuration names the password, Orthanc reads it from here
                  dict(os.environ, TCP_NODELAY="1", ORTHANC_PASSWORD=settings.orthanc_password))
    try:
        wait_until(lambda: answers(f"{node.url}/system", settings.orthanc_auth), 60, name)
    except StackError:
        process.stop()  # not yet handed to the caller's clean-up
        raise
    return process


def point_raw_archive_at(settings: Settings, entry: dict) -> None:
    """Replace raw's `vna` modality entry (AET, host, port) while it runs."""
    response = requests.put(f"{settings.raw.url}/modalities/vna", json=entry, timeout=10,
                            auth=settings.orthanc_auth, verify=settings.http_verify)
    assert response.status_code == 200, response.text
