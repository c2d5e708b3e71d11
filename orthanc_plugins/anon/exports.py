"""One export per de-identified study, however many extracts of a project request it.

A study named by two extracts of one project is two jobs, de-identified to
the same pseudonymised study. `study_exports` has one row per (project,
pseudonymised study, requested series): the first job to export takes it,
another job finding it taken by a live export waits, and finding it exported
ends `exported` itself without sending anything again.
"""

from __future__ import annotations

from enum import Enum

import psycopg


class ExportTurn(Enum):
    MINE = "mine"  # this job exports the study now
    DONE = "done"  # another job exported it: nothing to send
    BUSY = "busy"  # another job is exporting it: wait


def series_key(series_uids: list[str]) -> str:
    return "\\".join(sorted(series_uids))


def take_export_turn(conn: psycopg.Connection, job_id: int, project: str, pseudo_study_uid: str,
                     series: list[str]) -> ExportTurn:
    key = series_key(series)
    with conn.transaction():
        conn.execute(
            "INSERT INTO study_exports (project_slug, pseudo_study_uid, series_key, job_id, state)"
            " VALUES (%s, %s, %s, %s, 'exporting') ON CONFLICT DO NOTHING",
            (project, pseudo_study_uid, key, job_id),
        )
        holder, state, holder_state, holder_lease_live = conn.execute(
            "SELECT x.job_id, x.state, j.state, coalesce(j.lease_expires_at > clock_timestamp(), false)"
            " FROM study_exports x JOIN study_jobs j ON j.id = x.job_id"
            " WHERE x.project_slug = %s AND x.pseudo_study_uid = %s AND x.series_key = %s FOR UPDATE OF x",
            (project, pseudo_study_uid, key),
        ).fetchone()
        if state == "exported":
            return ExportTurn.DONE
        if holder == job_id:
            return ExportTurn.MINE
        if holder_state == "exporting" and holder_lease_live:
            return ExportTurn.BUSY
        # The holder stopped (failed, took back, died): this job takes the export over.
        conn.execute(
            "UPDATE study_exports SET job_id = %s, updated_at = clock_timestamp()"
            " WHERE project_slug = %s AND pseudo_study_uid = %s AND series_key = %s",
            (job_id, project, pseudo_study_uid, key),
        )
        return ExportTurn.MINE


def finish_export(conn: psycopg.Connection, job_id: int, project: str, pseudo_study_uid: str,
                  series: list[str], destination: str, location: str | None, instances: int) -> None:
    conn.execute(
        "UPDATE study_exports SET state = 'exported', destination = %s, location = %s, instances = %s,"
        " updated_at = clock_timestamp()"
        " WHERE project_slug = %s AND pseudo_study_uid = %s AND series_key = %s AND job_id = %s",
        (destination, location, instances, project, pseudo_study_uid, series_key(series), job_id),
    )
