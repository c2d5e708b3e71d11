"""The work queue shared by raw and anon: one `study_jobs` row per (project, extract, study).

Any number of raw and anon instances share it. A job is claimed with
`FOR UPDATE SKIP LOCKED`, so two claimers never take the same row, and held
under a lease: while held, `next_attempt_at` is the lease's end, so a job whose
holder died becomes due again by itself. Every later change is fenced by the
lease owner: a worker that lost its lease cannot overwrite the new holder.

Connections given to these functions must be in autocommit mode; each
function is its own transaction.
"""

from __future__ import annotations

import dataclasses
import datetime
from functools import cache
from typing import TypeVar

import psycopg
from psycopg.rows import class_row

TERMINAL_STATES = ("exported", "not_found", "failed", "skipped")
ALL_STATES = (
    "queued", "querying", "retrieving", "cached", "anonymising", "exporting", "exported",
    "not_found", "failed", "skipped",
)
# Columns a holder may set when it moves a job on.
MOVABLE_COLUMNS = frozenset({
    "raw_node", "raw_study_id", "last_error", "next_attempt_at",
    "pseudo_patient_id", "pseudo_study_uid",
})

Row = TypeVar("Row")


@cache
def _claim_sql(states: tuple[str, ...], new_state: str, columns: tuple[str, ...]) -> str:
    unknown = set(states + (new_state,)) - set(ALL_STATES)
    if unknown:
        raise ValueError(f"unknown job states {sorted(unknown)}")
    state_list = ", ".join(f"'{s}'" for s in states)
    return f"""
    WITH candidate AS (
        -- highest priority first, equal priorities taking turns (migration 0012);
        -- turns are counted by VNA transfers, the archive being the bottleneck
        SELECT pixl_next_job(ARRAY[{state_list}], {"true" if "queued" in states else "false"}) AS id)
    UPDATE study_jobs j SET
        state = '{new_state}',
        attempts = j.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s),
        updated_at = clock_timestamp(),
        state_times = CASE WHEN j.state = '{new_state}' THEN j.state_times
            ELSE j.state_times || jsonb_build_object('{new_state}', clock_timestamp()) END
    FROM candidate WHERE j.id = candidate.id
    RETURNING {", ".join("j." + c for c in columns)}
    """


def claim_job(
    conn: psycopg.Connection,
    states: tuple[str, ...],
    new_state: str,
    owner: str,
    lease_seconds: float,
    row_class: type[Row],
) -> Row | None:
    """Take the next due job in one of `states`, move it to `new_state` under a lease.

    `row_class` is a dataclass whose field names are `study_jobs` columns.
    """
    columns = tuple(field.name for field in dataclasses.fields(row_class))  # type: ignore[arg-type]
    with conn.cursor(row_factory=class_row(row_class)) as cur:
        return cur.execute(
            _claim_sql(states, new_state, columns), {"owner": owner, "lease": lease_seconds}
        ).fetchone()


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
    it is released (the job leaves the holder's hands or waits for `next_attempt_at`).
    """
    if state not in ALL_STATES or not set(columns) <= MOVABLE_COLUMNS:
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
    """Extend a held job's lease (during a long transfer); False if it was lost."""
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
    job,
    owner: str,
    error: str,
    *,
    base: float,
    cap: float,
    max_attempts: int,
    state: str = "queued",
) -> str:
    """After a failed attempt: back to `state` after a backoff, or 'failed' when out of attempts.

    `job` has `id` and `attempts`; `error` must hold no identifying value.
    Returns the state the job is now in.
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
