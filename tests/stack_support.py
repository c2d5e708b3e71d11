"""Helpers for tests that drive a real stack: counting what the archive received."""

from __future__ import annotations

from pathlib import Path

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
