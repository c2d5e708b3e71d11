"""Keeping a job's lease while a long step runs, and noticing when it is lost.

A step that outlasts the lease (a C-MOVE of a big study, a de-identification,
an upload) must renew it, or another worker takes the job and both do the
same work at once. `LeaseKeeper` renews in a thread of its own, on a
connection of its own, every third of the lease; when a renewal finds the
lease taken (or the database has been unreachable for a whole lease) the
keeper marks it lost, and the step stops at its next `check()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from orthanc_plugins.common.job_queue import renew_lease

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker holds the job now: stop working on it, change nothing."""


class LeaseKeeper:
    def __init__(self, connect: Callable[[], psycopg.Connection], job_id: int, owner: str,
                 lease_seconds: float, on_renewed: Callable[[], None] = lambda: None):
        self._connect = connect
        self.job_id = job_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._on_renewed = on_renewed
        self._lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job_id}: lease lost")

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._renew, name=f"pixl-lease-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _renew(self) -> None:
        interval = self.lease_seconds / 3
        renewed_at = time.monotonic()
        conn: psycopg.Connection | None = None
        try:
            while not self._done.wait(interval):
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    if not renew_lease(conn, self.job_id, self.owner, self.lease_seconds):
                        logger.warning("job %s: lease taken by another worker; stopping", self.job_id)
                        self._lost.set()
                        return
                    renewed_at = time.monotonic()
                    self._on_renewed()
                except psycopg.Error as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    if time.monotonic() - renewed_at >= self.lease_seconds:
                        logger.warning("job %s: lease not renewed for a whole lease (%s); stopping",
                                       self.job_id, type(exc).__name__)
                        self._lost.set()
                        return
        finally:
            if conn is not None:
                conn.close()
