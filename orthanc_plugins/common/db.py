"""The PIXL database: connections and schema migrations.

PostgreSQL is the single source of truth for work state. The schema lives in
`migrations/NNNN_name.sql`, applied in order, each exactly once, recorded in
`pixl_schema_migrations`. Both plugins call `migrate()` when they start; a
transaction-level advisory lock makes two plugins starting together apply
each migration once, the second one waiting and then finding nothing to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg

from orthanc_plugins.common.settings import Settings

logger = logging.getLogger(__name__)

# An arbitrary constant shared by every PIXL process: the migration lock key.
_MIGRATION_LOCK_KEY = 0x5049584C  # "PIXL"


# A half-open connection (the server gone without a word, a firewall dropping
# it) is noticed within about a minute by TCP keepalives, and no statement may
# hang a worker for longer than the timeout.
CONNECTION_OPTIONS = {
    "connect_timeout": 10,
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    "options": "-c statement_timeout=300s -c idle_in_transaction_session_timeout=300s",
}


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection to the PIXL database."""
    return psycopg.connect(settings.pg_conninfo, autocommit=autocommit, **CONNECTION_OPTIONS)


class ThreadConnections:
    """`with connections() as conn`: an autocommit connection of the calling thread's own,
    opened on first use and kept, reopened after it broke.

    Orthanc serves REST calls from a pool of threads; a new connection per request
    costs milliseconds and, under load, can time out while the database is busy.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = threading.local()

    @contextmanager
    def __call__(self) -> Iterator[psycopg.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._local.conn = connect(self.settings, autocommit=True)
        try:
            yield conn
        except psycopg.OperationalError:
            conn.close()  # the next call opens a new one
            raise


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped, in order."""
    folder = resources.files("orthanc_plugins.common") / "migrations"
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version_text, _, name = entry.name.removesuffix(".sql").partition("_")
        found.append((int(version_text), name, entry.read_text(encoding="utf-8")))
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {sorted(versions)}")
    return sorted(found)


def _applied_versions(conn: psycopg.Connection) -> set[int]:
    rows = conn.execute("SELECT version FROM pixl_schema_migrations").fetchall()
    return {row[0] for row in rows}


def migrate(conn: psycopg.Connection) -> int:
    """Apply every migration not applied yet; return the schema version.

    Safe to call from several processes at once.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pixl_schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = _applied_versions(conn)
        for version, name, sql in available_migrations():
            if version in applied:
                continue
            logger.info("applying PIXL schema migration %04d_%s", version, name)
            conn.execute(sql)
            conn.execute(
                "INSERT INTO pixl_schema_migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )
    return schema_version(conn)


def schema_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM pixl_schema_migrations").fetchone()
    return int(row[0]) if row else 0
