"""The work queue: one `study_jobs` row per (project, extract, requested study).

Any number of raw instances share it. A job is claimed with
`FOR UPDATE SKIP LOCKED`, so two claimers never take the same row, and held
under a lease: while held, `next_attempt_at` is the lease's end, so a job whose
holder died becomes due again by itself. Every later change is fenced by the
lease owner: a worker that lost its lease cannot overwrite the new holder.

Connections given to these functions must be in autocommit mode; each
function is its own transaction.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import class_row

TRANSFER_STATES = ("queued", "querying", "retrieving")  # claimable for a VNA transfer
HELD_BY_RAW = ("querying", "retrieving", "cached")  # states in which raw holds a lease
TERMINAL_STATES = ("exported", "not_found", "failed", "skipped")
ALL_STATES = (
    "queued", "querying", "retrieving", "cached", "anonymising", "exporting", "exported",
    "not_found", "failed", "skipped",
)

_JOB_COLUMNS = (
    "id, extract_id, project_slug, mrn, accession_number, study_uid, series_uids, study_date,"
    " procedure_occurrence_id, state, attempts, raw_study_id"
)


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


def _claim_sql(states: tuple[str, ...], new_state: str) -> str:
    # The partial indexes of migration 0010 match these state lists exactly.
    state_list = ", ".join(f"'{s}'" for s in states)
    return f"""
    WITH candidate AS (
        SELECT id FROM study_jobs
        -- now(), not clock_timestamp(): a stable value bounds the index scan
        WHERE state IN ({state_list}) AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    UPDATE study_jobs j SET
        state = '{new_state}',
        attempts = j.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s),
        updated_at = clock_timestamp(),
        state_times = j.state_times || jsonb_build_object('{new_state}', clock_timestamp())
    FROM candidate WHERE j.id = candidate.id
    RETURNING {", ".join("j." + c.strip() for c in _JOB_COLUMNS.split(","))}
    """


_CLAIM_TRANSFER = _claim_sql(TRANSFER_STATES, "querying")
_CLAIM_HANDOFF = _claim_sql(("cached",), "cached")


def claim_next_job(conn: psycopg.Connection, owner: str, lease_seconds: float) -> StudyJob | None:
    """Take the next job due for a VNA transfer (queued, or abandoned by a dead holder).

    Unthrottled: the worker goes through `throttle.claim_transfer_job`, which
    calls this inside the transaction that takes a transfer slot.
    """
    with conn.cursor(row_factory=class_row(StudyJob)) as cur:
        return cur.execute(_CLAIM_TRANSFER, {"owner": owner, "lease": lease_seconds}).fetchone()


def claim_handoff_job(conn: psycopg.Connection, owner: str, lease_seconds: float) -> StudyJob | None:
    """Take the next cached job whose hand-off to anon is due (it failed before, or its holder died)."""
    with conn.cursor(row_factory=class_row(StudyJob)) as cur:
        return cur.execute(_CLAIM_HANDOFF, {"owner": owner, "lease": lease_seconds}).fetchone()


def move_job(
    conn: psycopg.Connection,
    job_id: int,
    owner: str,
    state: str,
    *,
    lease_seconds: float | None = None,
    **columns: object,
) -> bool:
    """Move a held job to `state`, setting extra columns; False if the lease was lost.

    With `lease_seconds` the lease is renewed (the job stays held); without,
    it is released (the job leaves raw's hands or waits for `next_attempt_at`).
    """
    allowed = {"raw_node", "raw_study_id", "last_error", "next_attempt_at"}
    if state not in ALL_STATES or not set(columns) <= allowed:
        raise ValueError(f"bad transition to {state!r} with {sorted(columns)}")
    assignments = [f"{name} = %({name})s" for name in columns]
    if lease_seconds is not None:
        assignments += [
            "lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s)",
            "next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s)",
        ]
    else:
        assignments += ["lease_owner = NULL", "lease_expires_at = NULL"]
        if "next_attempt_at" not in columns:
            assignments.append("next_attempt_at = clock_timestamp()")
    sql = (
        "UPDATE study_jobs SET state = %(state)s, updated_at = clock_timestamp(),"
        " state_times = CASE WHEN state = %(state)s THEN state_times"
        "   ELSE state_times || jsonb_build_object(%(state)s::text, clock_timestamp()) END, "
        + ", ".join(assignments)
        + " WHERE id = %(id)s AND lease_owner = %(owner)s"
    )
    params = {"state": state, "id": job_id, "owner": owner, "lease": lease_seconds, **columns}
    return conn.execute(sql, params).rowcount == 1


def renew_lease(conn: psycopg.Connection, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend a held job's lease (during a long C-MOVE); False if it was lost."""
    return conn.execute(
        "UPDATE study_jobs SET"
        " lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),"
        " next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s)"
        " WHERE id = %(id)s AND lease_owner = %(owner)s",
        {"id": job_id, "owner": owner, "lease": lease_seconds},
    ).rowcount == 1


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff: base, 2 base, 4 base, ... never above cap."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def schedule_retry(
    conn: psycopg.Connection,
    job: StudyJob,
    owner: str,
    error: str,
    *,
    base: float,
    cap: float,
    max_attempts: int,
    state: str = "queued",
) -> str:
    """After a failed attempt: back to `state` after a backoff, or 'failed' when out of attempts.

    `error` must hold no identifying value. Returns the state the job is now in.
    """
    if job.attempts >= max_attempts:
        new_state = "failed"
        error = f"{error} (gave up after {job.attempts} attempts)"
        due = datetime.datetime.now(datetime.UTC)
    else:
        new_state = state
        due = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=backoff_seconds(job.attempts, base, cap)
        )
    move_job(conn, job.id, owner, new_state, last_error=error[:500], next_attempt_at=due)
    return new_state


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
        "UPDATE study_jobs j SET state = 'queued', attempts = 0, last_error = NULL,"
        " next_attempt_at = clock_timestamp(), updated_at = clock_timestamp(),"
        " lease_owner = NULL, lease_expires_at = NULL,"
        " state_times = j.state_times || jsonb_build_object('queued', clock_timestamp())"
        " FROM extracts e WHERE e.id = j.extract_id AND " + " AND ".join(conditions)
    )
    return conn.execute(sql, params).rowcount
