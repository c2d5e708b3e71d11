"""The record of lifecycle hook calls (table `hook_events`), shared by anon, which writes
it, and raw and anon, whose `GET /pixl/plugins` shows the recent errors."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg.rows import dict_row

RECENT_ERRORS = 50


def record_hook_calls(
    conn: psycopg.Connection,
    hook: str,
    project_slug: str,
    extract_id: int,
    job_id: int | None,
    calls: Iterable[tuple[str, str | None]],
) -> None:
    """One row per (plugin, error or None) of one hook call."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO hook_events (hook, plugin, project_slug, extract_id, job_id, outcome, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(hook, plugin, project_slug, extract_id, job_id, "ok" if error is None else "error",
              error) for plugin, error in calls],
        )


def recent_hook_errors(conn: psycopg.Connection, limit: int = RECENT_ERRORS) -> list[dict]:
    """The latest hook errors, newest first, for operators."""
    rows = conn.cursor(row_factory=dict_row).execute(
        "SELECT h.hook, h.plugin, h.project_slug AS project, e.extract_name AS extract, h.job_id,"
        " h.error, h.recorded_at FROM hook_events h JOIN extracts e ON e.id = h.extract_id"
        " WHERE h.outcome = 'error' ORDER BY h.recorded_at DESC, h.id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    for row in rows:
        row["recorded_at"] = row["recorded_at"].isoformat()
    return rows
