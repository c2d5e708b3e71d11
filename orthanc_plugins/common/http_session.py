"""HTTP sessions that never send a request on a connection the server is closing.

Orthanc 1.10 (CivetWeb) closes a kept-alive connection after one second idle and has
no setting for it. A client that polls about once a second (the demo, pixl-tui's
live screens, anon's worker between jobs) sends its next request just as the
server's close is on its way: urllib3's check that the connection is still open
passes, the request goes out, and the answer is `RemoteDisconnected`. Through
stunnel's HTTPS front the window is wider. For a POST nobody can then tell whether
it ran, so retrying is no cure; a connection idle for longer than half Orthanc's
limit is simply not used again, and the request opens a fresh one.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

ORTHANC_KEEP_ALIVE_SECONDS = 1.0
MAX_IDLE_SECONDS = ORTHANC_KEEP_ALIVE_SECONDS / 2


class _IdleLimitedPool:
    """A connection pool that closes what has waited in it longer than `max_idle`."""

    max_idle: float = MAX_IDLE_SECONDS

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.pixl_idle_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        idle_since = getattr(conn, "pixl_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > self.max_idle:
            conn.close()  # urllib3 reconnects a closed connection on its next request
        return conn


@functools.cache  # made once per limit, not once per session
def _pool_classes(max_idle: float) -> dict[str, type]:
    attributes = {"max_idle": max_idle}
    return {
        "http": type("IdleLimitedHTTPPool", (_IdleLimitedPool, HTTPConnectionPool), attributes),
        "https": type("IdleLimitedHTTPSPool", (_IdleLimitedPool, HTTPSConnectionPool), attributes),
    }


class IdleLimitedAdapter(HTTPAdapter):
    """requests' adapter over pools that drop connections idle past `max_idle` seconds."""

    def __init__(self, max_idle: float = MAX_IDLE_SECONDS, **kwargs: Any) -> None:
        self._pool_classes = _pool_classes(max_idle)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


def idle_limited_session(
    session: requests.Session | None = None, max_idle: float = MAX_IDLE_SECONDS,
) -> requests.Session:
    """`session` (or a new one) with both schemes mounted on an IdleLimitedAdapter."""
    session = session or requests.Session()
    adapter = IdleLimitedAdapter(max_idle)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
