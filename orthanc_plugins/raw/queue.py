"""raw's side of the work queue (`orthanc_plugins.common.job_queue`): the jobs
it claims for a VNA transfer or a hand-off to anon, and the retry of failed ones.

Connections given to these functions must be in autocommit mode; each
function is its own transaction.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import psycopg

# The shared queue operations, used by raw's modules as `queue.<name>`.
from orthanc_plugins.common.job_queue import (  # noqa: F401
    ALL_STATES,
    TERMINAL_STATES,
    TRANSFER_STATES,
    backoff_seconds,
    claim_job,
    move_job,
    release_job,
    renew_lease,
    schedule_retry,
)

HELD_BY_RAW = ("querying", "retrieving", "cached")  # states in which raw holds a lease

@dataclass
class StudyJob:
    """A claimed job. Identifying fields never appear in its repr (nor in logs)."""

    id: int
    extract_id: int
    project_slug: str
    mrn: str = field(repr=False)
    accession_number: str = field(repr=False)
    study_uid: str = field(repr=False)
    series_uids: list[str] = field(repr=False)
    study_date: datetime.date | None = None
    procedure_occurrence_id: int | None = None
    state: str = "queued"
    attempts: int = 0
    raw_study_id: str | None = None


def claim_next_job(conn: psycopg.Connection, owner: str, lease_seconds: float,
                   max_crashes: int = 2) -> StudyJob | None:
    """Take the next job due for a VNA transfer (queued, or abandoned by a dead holder).

    Unthrottled: the worker goes through `throttle.claim_transfer_job`, which
    calls this inside the transaction that takes a transfer slot.
    """
    return claim_job(conn, TRANSFER_STATES, "querying", owner, lease_seconds, StudyJob,
                     max_crashes=max_crashes)


def claim_handoff_job(conn: psycopg.Connection, owner: str, lease_seconds: float,
                      max_crashes: int = 2) -> StudyJob | None:
    """Take the next cached job whose hand-off to anon is due (it failed before, or its holder died)."""
    return claim_job(conn, ("cached",), "cached", owner, lease_seconds, StudyJob, max_crashes=max_crashes)


def retry_failed_jobs(
    conn: psycopg.Connection,
    *,
    job_ids: list[int] | None = None,
    project: str | None = None,
    extract: str | None = None,
) -> int:
    """Queue failed and not-found jobs again, with fresh attempts; returns how many."""
    conditions = ["j.state IN ('failed', 'not_found')"]
    params: dict[str, object] = {}
    if job_ids is not None:
        conditions.append("j.id = ANY(%(ids)s)")
        params["ids"] = job_ids
    if project:
        conditions.append("j.project_slug = %(project)s")
        params["project"] = project
    if extract:
        conditions.append("e.extract_name = %(extract)s")
        params["extract"] = extract
    sql = (
        "UPDATE study_jobs j SET state = 'queued', attempts = 0, retries = 0, crashes = 0,"
        " outage_since = NULL, last_error = NULL,"
        " next_attempt_at = clock_timestamp(), updated_at = clock_timestamp(),"
        " lease_owner = NULL, lease_expires_at = NULL,"
        " state_times = j.state_times || jsonb_build_object('queued', clock_timestamp())"
        " FROM extracts e WHERE e.id = j.extract_id AND " + " AND ".join(conditions)
    )
    return conn.execute(sql, params).rowcount
