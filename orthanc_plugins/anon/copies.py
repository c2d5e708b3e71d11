"""anon's own copies of de-identified studies, kept a while for inspection in its web UI.

The export does not need them (it reads the staged zip), so they are stored
beside the work, in a thread of their own over anon's HTTP API (an SDK call
would hold the plugin's lock and stall every other Python thread of anon),
and deleted by the heartbeat's chore once their study has been exported for
`anon_keep_hours` (0: never stored at all).
"""

from __future__ import annotations

import json
import logging
import queue
import threading

import psycopg

from orthanc_plugins.common.failures import describe
from orthanc_plugins.common.orthanc_api import OrthancApi, OrthancError

logger = logging.getLogger(__name__)

_DONE = object()


class CopyWriter:
    """Stores de-identified instances into anon's Orthanc in the background."""

    def __init__(self, anon: OrthancApi, *, enabled: bool, backlog: int = 16):
        self.anon = anon
        self.enabled = enabled
        self.ids_by_series: dict[str, list[str]] = {}
        self.study_ids: set[str] = set()
        self.error: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CopyWriter:
        if self.enabled:
            self._thread = threading.Thread(target=self._store, name="pixl-anon-copies", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()

    def add(self, series_uid: str, data: bytes) -> None:
        if self.enabled:
            self._queue.put((series_uid, data))

    def _store(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self.error is not None:
                continue  # one failure is enough: the copy is incomplete, the export is not
            series_uid, data = item
            try:
                stored = json.loads(self.anon.post("/instances", data))
            except Exception as exc:
                self.error = describe(exc)
                logger.warning("anon: storing a de-identified copy failed (%s); the export goes on",
                               self.error)
                continue
            self.ids_by_series.setdefault(series_uid, []).append(stored["ID"])
            self.study_ids.add(stored["ParentStudy"])

    def delete_series(self, series_uids: set[str]) -> None:
        """Remove series that the study-level rules dropped (call after leaving the context)."""
        for series_uid in series_uids:
            for instance_id in self.ids_by_series.pop(series_uid, []):
                try:
                    self.anon.delete(f"/instances/{instance_id}")
                except OrthancError:
                    pass  # recycled already


def record_copies(conn: psycopg.Connection, anon_node: str, job_id: int, study_ids: set[str]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO anon_copies (anon_node, anon_study_id, job_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            [(anon_node, study_id, job_id) for study_id in sorted(study_ids)],
        )


def mark_exported(conn: psycopg.Connection, job_id: int) -> None:
    conn.execute("UPDATE anon_copies SET exported_at = clock_timestamp() WHERE job_id = %s", (job_id,))


def delete_expired_copies(conn: psycopg.Connection, anon: OrthancApi, anon_node: str,
                          keep_hours: float) -> int:
    """Delete this anon's copies of studies that ended more than `keep_hours` ago."""
    rows = conn.execute(
        "SELECT c.anon_study_id, c.job_id FROM anon_copies c JOIN study_jobs j ON j.id = c.job_id"
        " WHERE c.anon_node = %s AND j.state IN ('exported', 'failed', 'skipped')"
        " AND coalesce(c.exported_at, j.updated_at) < clock_timestamp() - make_interval(secs => %s * 3600)"
        " LIMIT 100",
        (anon_node, keep_hours),
    ).fetchall()
    for study_id, job_id in rows:
        still_needed = conn.execute(
            "SELECT 1 FROM anon_copies c JOIN study_jobs j ON j.id = c.job_id WHERE c.anon_node = %s"
            " AND c.anon_study_id = %s AND j.state NOT IN ('exported', 'failed', 'skipped')",
            (anon_node, study_id),
        ).fetchone()
        if still_needed is None:
            try:
                anon.delete(f"/studies/{study_id}")
            except OrthancError:
                pass  # gone already
        conn.execute("DELETE FROM anon_copies WHERE anon_node = %s AND anon_study_id = %s AND job_id = %s",
                     (anon_node, study_id, job_id))
    return len(rows)
