"""The end of a practice run's job: in place of the export, take back what the
de-identification left behind and end the job `skipped`, never `exported`.

What a practice run leaves, and why:
- nothing at any destination, and nothing counted as exported;
- the staged zip and anon's de-identified copy for its web UI are deleted here;
- the id-map pairs (`deid_id_map`) recorded for the study are deleted here,
  unless a real (not practice) job of the project holds the same study or
  patient, whose audit record they are as well;
- the job's row, its pseudonyms and its `anon_outcomes` stay until a real load
  of the extract replaces them: they are the practice run's summary and
  report, in the access-controlled database like every job;
- raw's cache keeps the identifiable copy, as after a real run: it is a cache
  (recycled by size) and saves the real run a second transfer;
- the project's pseudonymisation key, made on first use, is kept: a real run
  must derive the same pseudonyms.
"""

from __future__ import annotations

import logging

import psycopg

from orthanc_plugins.anon.staging import StagedStudy
from orthanc_plugins.common.job_queue import move_job
from orthanc_plugins.common.orthanc_api import OrthancApi, OrthancError

logger = logging.getLogger(__name__)

PRACTICE_REASON = "practice run: de-identified, not exported"


def is_practice_job(conn: psycopg.Connection, job_id: int) -> bool:
    row = conn.execute(
        "SELECT e.practice FROM study_jobs j JOIN extracts e ON e.id = j.extract_id WHERE j.id = %s",
        (job_id,),
    ).fetchone()
    return bool(row and row[0])


def end_practice_job(conn: psycopg.Connection, job, owner: str, staged: StagedStudy,
                     anon: OrthancApi, anon_node: str) -> None:
    """`job` (held by `owner`) has `id`, `project_slug`, `pseudo_patient_id`, `pseudo_study_uid`;
    `staged` is its staged zip on this anon, `anon` this anon's Orthanc (for its copies)."""
    uids = staged.instance_uids()
    series_uids = sorted({series for series, _ in uids})
    sop_uids = [sop for _, sop in uids]
    copy_ids = [row[0] for row in conn.execute(
        "SELECT anon_study_id FROM anon_copies WHERE job_id = %s AND anon_node = %s", (job.id, anon_node))]
    with conn.transaction():
        forget_id_map(conn, job, series_uids, sop_uids)
        for study_id in copy_ids:
            try:
                anon.delete(f"/studies/{study_id}")
            except OrthancError:
                pass  # recycled already
        conn.execute("DELETE FROM anon_copies WHERE job_id = %s", (job.id,))
        move_job(conn, job.id, owner, "skipped", last_error=PRACTICE_REASON)
    staged.discard()
    logger.info("job %s: practice run, study %s de-identified and not exported",
                job.id, job.pseudo_study_uid)


def forget_id_map(conn: psycopg.Connection, job, series_uids: list[str], sop_uids: list[str]) -> None:
    """Delete the practice study's id-map pairs that no real job of the project needs."""
    real_job_holds = (
        "SELECT 1 FROM study_jobs o JOIN extracts e ON e.id = o.extract_id"
        " WHERE o.project_slug = %(project)s AND NOT e.practice AND o.{column} = %(value)s"
    )
    params = {"project": job.project_slug, "study": job.pseudo_study_uid,
              "series": series_uids, "sops": sop_uids}
    conn.execute(
        "DELETE FROM deid_id_map WHERE project_slug = %(project)s AND ("
        " (kind = 'study_uid' AND id_new = %(study)s)"
        " OR (kind = 'series_uid' AND id_new = ANY(%(series)s))"
        " OR (kind = 'sop_instance_uid' AND id_new = ANY(%(sops)s)))"
        f" AND NOT EXISTS ({real_job_holds.format(column='pseudo_study_uid')})",
        params | {"value": job.pseudo_study_uid},
    )
    conn.execute(
        "DELETE FROM deid_id_map WHERE project_slug = %(project)s"
        " AND kind = 'patient_id' AND id_new = %(value)s"
        f" AND NOT EXISTS ({real_job_holds.format(column='pseudo_patient_id')})",
        params | {"value": job.pseudo_patient_id},
    )
