"""Whether a PIXL process and its workers are alive, for the database and for health.

`ProcessHeartbeat` keeps the process's row in `pixl_processes` fresh (that is
how a claimer tells a crashed holder from a live one) and runs the process's
periodic chores in the same thread. `WorkerBeats` records when each worker
thread last made progress, so that health reports dead and stuck workers
rather than "healthy" over a process that does nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from orthanc_plugins.common.plugin_support import safe_traceback

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0


class WorkerBeats:
    def __init__(self, stuck_after_seconds: float):
        self.stuck_after_seconds = stuck_after_seconds
        self._beats: dict[str, float] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def register(self, name: str, thread: threading.Thread) -> None:
        with self._lock:
            self._threads[name] = thread
            self._beats[name] = time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._threads.clear()
            self._beats.clear()

    def beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def report(self) -> dict:
        now = time.monotonic()
        with self._lock:
            dead = sorted(n for n, t in self._threads.items() if not t.is_alive())
            stuck = sorted(n for n, b in self._beats.items()
                           if n not in dead and now - b > self.stuck_after_seconds)
            expected = len(self._threads)
        return {"expected": expected, "alive": expected - len(dead), "dead": dead, "stuck": stuck,
                "healthy": expected > 0 and not dead and not stuck}


class ProcessHeartbeat:
    """One thread per process: refresh `pixl_processes`, then run the chores."""

    def __init__(self, connect: Callable[[], psycopg.Connection], owner_prefix: str, service: str,
                 node: str, chores: list[Callable[[psycopg.Connection], None]] | None = None,
                 interval: float = HEARTBEAT_SECONDS):
        self._connect = connect
        self.owner_prefix = owner_prefix
        self.service = service
        self.node = node
        self.chores = chores or []
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"pixl-{self.service}-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            with self._connect() as conn:
                conn.execute("DELETE FROM pixl_processes WHERE owner_prefix = %s", (self.owner_prefix,))
        except psycopg.Error:
            pass  # the row ages out: a dead process looks the same

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                conn.execute(
                    "INSERT INTO pixl_processes (owner_prefix, service, node) VALUES (%s, %s, %s)"
                    " ON CONFLICT (owner_prefix) DO UPDATE SET last_seen = clock_timestamp()",
                    (self.owner_prefix, self.service, self.node),
                )
                for chore in self.chores:
                    chore(conn)
            except psycopg.Error as exc:
                logger.warning("%s heartbeat: database error %s", self.service, type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            except Exception as exc:  # a chore's bug must not stop the heartbeat
                logger.error("%s heartbeat: %s", self.service, safe_traceback(exc))
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()
