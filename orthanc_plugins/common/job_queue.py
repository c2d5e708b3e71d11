"""The work queue shared by raw and anon: one `study_jobs` row per (project, extract, study).

Any number of raw and anon instances share it. A job is claimed with
`FOR UPDATE SKIP LOCKED`, so two claimers never take the same row, and held
under a lease: while held, `next_attempt_at` is the lease's end, so a job whose
holder died becomes due again by itself. Every later change is fenced by the
lease owner: a worker that lost its lease cannot overwrite the new holder.
Every time is the database's clock (`clock_timestamp()`): servers' clocks may
disagree, the database's is the one all of them share.

Failures are of two kinds (`schedule_retry`): the study's own fault, counted
per stage (`attempts`) up to `RetryPolicy.max_attempts`; and outages (the
archive, anon, a destination away), which count nothing and fail a study only
once they have lasted `RetryPolicy.give_up_seconds`.

Connections given to these functions must be in autocommit mode; each
function is its own transaction.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row

TERMINAL_STATES = ("exported", "not_found", "failed", "skipped")
ALL_STATES = (
    "queued", "querying", "retrieving", "cached", "anonymising", "exporting", "exported",
    "not_found", "failed", "skipped",
)
# The states of one stage share its attempt count; entering another stage starts it again.
TRANSFER_STATES = ("queued", "querying", "retrieving")
# Columns a holder may set when it moves a job on.
MOVABLE_COLUMNS = frozenset({
    "raw_node", "raw_study_id", "last_error", "next_attempt_at",
    "pseudo_patient_id", "pseudo_study_uid", "raw_bytes", "raw_instances", "raw_patient_id",
    "raw_protected", "anon_node",
})
# A holder's process counts as dead when it has not been seen for this long
# (processes refresh `pixl_processes` every few seconds, see `liveness.py`).
PROCESS_DEAD_AFTER_SECONDS = 20.0

Row = TypeVar("Row")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: capped exponential backoff, and when to give up."""

    base_seconds: float
    cap_seconds: float
    max_attempts: int  # failures that are the study's own fault, per stage
    give_up_seconds: float  # how long an outage may last before the study fails
    max_crashes: int = 2  # processes a study may take down before it is set aside

    @classmethod
    def from_settings(cls, settings) -> RetryPolicy:
        return cls(settings.retry_base_seconds, settings.retry_max_seconds, settings.max_attempts,
                   settings.give_up_seconds, settings.max_crashes)


def _states_sql(states: tuple[str, ...]) -> str:
    unknown = set(states) - set(ALL_STATES)
    if unknown:
        raise ValueError(f"unknown job states {sorted(unknown)}")
    return ", ".join(f"'{s}'" for s in states)


# A job taken back from a holder that did not release it: the holder's process
# is dead if it is not seen any more, unless PostgreSQL itself restarted lately
# (then nobody could be seen, and nobody is to blame).
_CRASHED_HOLDER = """
    j.lease_owner IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM pixl_processes p
        WHERE p.owner_prefix = regexp_replace(j.lease_owner, '/[^/]*$', '')
          AND p.last_seen > clock_timestamp() - make_interval(secs => %(dead_after)s))
    AND pg_postmaster_start_time() < clock_timestamp() - make_interval(secs => %(dead_after)s)
"""


def _state_times_on_entering(state: str, row: str = "") -> str:
    """SQL of `state_times` once the job is in `state` (an SQL expression of text):
    the time it entered that state is recorded, and kept while it stays there."""
    return (f"CASE WHEN {row}state = {state} THEN {row}state_times"
            f" ELSE {row}state_times || jsonb_build_object({state}, clock_timestamp()) END")


@cache
def _claim_sql(states: tuple[str, ...], new_state: str, columns: tuple[str, ...]) -> str:
    _states_sql((new_state,))  # validates it
    state_list = _states_sql(states)
    return f"""
    WITH candidate AS (
        -- highest priority first, equal priorities taking turns (migration 0012);
        -- turns are counted by VNA transfers, the archive being the bottleneck
        SELECT pixl_next_job(ARRAY[{state_list}], {"true" if "queued" in states else "false"},
                             %(extra)s) AS id)
    UPDATE study_jobs j SET
        state = '{new_state}',
        crashes = j.crashes + CASE WHEN {_CRASHED_HOLDER} THEN 1 ELSE 0 END,
        lease_owner = %(owner)s,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s),
        updated_at = clock_timestamp(),
        state_times = {_state_times_on_entering(f"'{new_state}'::text", "j.")}
    FROM candidate WHERE j.id = candidate.id
    RETURNING {", ".join("j." + c for c in sorted(set(columns) | {"crashes"}))}
    """


def claim_job(
    conn: psycopg.Connection,
    states: tuple[str, ...],
    new_state: str,
    owner: str,
    lease_seconds: float,
    row_class: type[Row],
    *,
    max_crashes: int = 2,
    where: str = "",
    params: dict | None = None,
    dead_after_seconds: float = PROCESS_DEAD_AFTER_SECONDS,
) -> Row | None:
    """Take the next due job in one of `states`, move it to `new_state` under a lease.

    `row_class` is a dataclass whose field names are `study_jobs` columns.
    `where` adds SQL conditions over the candidate `j` (with `params`), handed to
    `pixl_next_job` (migration 0012) with its values quoted.
    A job that has taken `max_crashes` processes down is set aside as
    failed, and the next one is taken.
    """
    fields = tuple(field.name for field in dataclasses.fields(row_class))  # type: ignore[arg-type]
    sql = _claim_sql(states, new_state, fields)
    extra = psycopg.ClientCursor(conn).mogrify(where, params or {}) if where else ""
    while True:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(sql, {"owner": owner, "lease": lease_seconds,
                                    "dead_after": dead_after_seconds, "extra": extra}).fetchone()
        if row is None:
            return None
        if row["crashes"] >= max_crashes:
            move_job(conn, row["id"], owner, "failed", last_error=(
                f"set aside: the study was being processed when {row['crashes']} worker"
                " processes died; see the servers' logs"))
            continue
        return row_class(**{name: row[name] for name in fields})


def _stage_changes(new_state_param: str) -> str:
    """SQL: whether moving from the row's state to the given state enters another stage."""
    transfer = _states_sql(TRANSFER_STATES)
    return (f"NOT (state = {new_state_param}"
            f" OR (state IN ({transfer}) AND {new_state_param} IN ({transfer})))")


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
    Entering another stage starts its attempt count afresh.
    """
    if state not in ALL_STATES or not set(columns) <= MOVABLE_COLUMNS:
        raise ValueError(f"bad transition to {state!r} with {sorted(columns)}")
    assignments = [f"{name} = %({name})s" for name in columns]
    new_stage = _stage_changes("%(state)s::text")
    assignments += [
        f"attempts = CASE WHEN {new_stage} THEN 0 ELSE attempts END",
        f"retries = CASE WHEN {new_stage} THEN 0 ELSE retries END",
        f"outage_since = CASE WHEN {new_stage} THEN NULL ELSE outage_since END",
    ]
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
        f" state_times = {_state_times_on_entering('%(state)s::text')}, "
        + ", ".join(assignments)
        + " WHERE id = %(id)s AND lease_owner = %(owner)s"
    )
    params = {"state": state, "id": job_id, "owner": owner, "lease": lease_seconds, **columns}
    return conn.execute(sql, params).rowcount == 1


def renew_lease(conn: psycopg.Connection, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend a held job's lease (during a long step); False if it was lost."""
    return conn.execute(
        "UPDATE study_jobs SET"
        " lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),"
        " next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s)"
        " WHERE id = %(id)s AND lease_owner = %(owner)s",
        {"id": job_id, "owner": owner, "lease": lease_seconds},
    ).rowcount == 1


def release_job(conn: psycopg.Connection, job_id: int, owner: str, state: str, delay_seconds: float) -> bool:
    """Give a held job back without counting anything against it: it is due again
    in `delay_seconds` (raw's cache is full, an export of the same study is under way)."""
    return conn.execute(
        "UPDATE study_jobs SET state = %(state)s, lease_owner = NULL, lease_expires_at = NULL,"
        " next_attempt_at = clock_timestamp() + make_interval(secs => %(delay)s),"
        " updated_at = clock_timestamp(),"
        f" state_times = {_state_times_on_entering('%(state)s::text')}"
        " WHERE id = %(id)s AND lease_owner = %(owner)s",
        {"id": job_id, "owner": owner, "state": state, "delay": delay_seconds},
    ).rowcount == 1


def backoff_seconds(retries: int, base: float, cap: float) -> float:
    """Exponential backoff: base, 2 base, 4 base, ... never above cap."""
    return min(cap, base * 2 ** max(0, retries - 1))


_RETRY_SQL = f"""
WITH counted AS (
    SELECT id,
        attempts + CASE WHEN %(outage)s THEN 0 ELSE 1 END AS attempts,
        retries + 1 AS retries,
        CASE WHEN %(outage)s THEN coalesce(outage_since, clock_timestamp()) END AS outage_since
    FROM study_jobs WHERE id = %(id)s AND lease_owner = %(owner)s FOR UPDATE),
decided AS (
    SELECT *, CASE
        WHEN NOT %(outage)s THEN attempts >= %(max_attempts)s
        ELSE clock_timestamp() - outage_since >= make_interval(secs => %(give_up)s) END AS give_up
    FROM counted)
UPDATE study_jobs j SET
    state = CASE WHEN d.give_up THEN 'failed' ELSE %(state)s END,
    attempts = d.attempts, retries = d.retries, outage_since = d.outage_since,
    last_error = left(CASE
        WHEN NOT d.give_up THEN %(error)s
        WHEN %(outage)s THEN %(error)s || format(' (gave up: unavailable for %%s)',
            date_trunc('second', clock_timestamp() - d.outage_since))
        ELSE %(error)s || format(' (gave up after %%s attempts)', d.attempts) END, 500),
    next_attempt_at = CASE WHEN d.give_up THEN clock_timestamp() ELSE clock_timestamp()
        + make_interval(secs => least(%(cap)s, %(base)s * power(2, greatest(0, d.retries - 1)))) END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp(),
    state_times = {_state_times_on_entering("(CASE WHEN d.give_up THEN 'failed' ELSE %(state)s END)", "j.")}
FROM decided d WHERE j.id = d.id
RETURNING j.state
"""


def schedule_retry(
    conn: psycopg.Connection,
    job_id: int,
    owner: str,
    error: str,
    policy: RetryPolicy,
    *,
    state: str,
    outage: bool = False,
) -> str | None:
    """After a failed attempt: back to `state` after a backoff, or 'failed' when it is time
    to give up (out of attempts; or, for an outage, after `policy.give_up_seconds`).

    `error` must hold no identifying value. Returns the job's new state, None
    if the lease was lost (another holder decides).
    """
    if state not in ALL_STATES:
        raise ValueError(f"unknown job state {state!r}")
    row = conn.execute(_RETRY_SQL, {
        "id": job_id, "owner": owner, "error": error[:400], "state": state, "outage": outage,
        "max_attempts": policy.max_attempts, "give_up": policy.give_up_seconds,
        "base": policy.base_seconds, "cap": policy.cap_seconds,
    }).fetchone()
    return row[0] if row else None
