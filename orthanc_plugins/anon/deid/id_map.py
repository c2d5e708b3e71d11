"""The id_old -> id_new pairs of a project, stored for audit and validation.

They live only in the `deid_id_map` table (access-controlled storage) and are
never logged. Recording is idempotent: a pair already recorded is left alone,
so a retried hand-off records nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from orthanc_plugins.anon.deid.engine import IdPair

_INSERT = (
    "INSERT INTO deid_id_map (project_slug, kind, id_old, id_new) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (project_slug, kind, id_old) DO NOTHING"
)


def record_id_map(conn: psycopg.Connection, project_slug: str, pairs: Iterable[IdPair]) -> int:
    """Insert the pairs not recorded yet (in the caller's transaction); return how many were new."""
    rows = sorted({(project_slug, p.kind, p.id_old, p.id_new) for p in pairs})
    if not rows:
        return 0
    with conn.cursor() as cursor:
        cursor.executemany(_INSERT, rows, returning=False)
        return max(cursor.rowcount, 0)
