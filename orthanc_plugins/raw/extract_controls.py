"""What an operator decides about an extract: how it is loaded (a limit on
the number of studies, a practice run, a priority), its priority while it
runs, and cancelling it.

A practice run is an extract like any other, flagged `practice`: raw fetches
its studies and anon de-identifies them, but anon's export step sends
nothing and ends each job `skipped` (orthanc_plugins/anon/practice.py). A
real load of the same extract replaces the practice run's jobs, once it has
ended, so that trying a project first never blocks its real run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import psycopg

from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw.extracts import ExtractError, LoadSummary, ParsedExtract, queue_extract

MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 1, 5, 1
CANCELLED_REASON = "cancelled by the operator before retrieval"  # as migration 0012's trigger writes
EXPORTED_BEFORE_REASON = "practice run: exported before by an earlier extract"
_UNFINISHED = ("queued", "querying", "retrieving", "cached", "anonymising", "exporting")


class ExtractNotFound(LookupError):
    """No such extract: the message names project and extract (never identifying)."""


@dataclass(frozen=True)
class LoadOptions:
    limit: int | None = None  # queue only the first N studies of the extract
    practice: bool = False
    priority: int | None = None  # None: keep the extract's (new ones: DEFAULT_PRIORITY)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ExtractError("limit must be a whole number of studies, at least 1")
        if self.priority is not None and not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ExtractError(f"priority must be {MIN_PRIORITY} to {MAX_PRIORITY}")


def load_extract(
    conn: psycopg.Connection,
    settings: Settings,
    extract: ParsedExtract,
    options: LoadOptions,
    *,
    dry_run: bool = False,
) -> dict:
    """Queue the extract with the options, in one transaction; the load summary as JSON.

    A dry run rolls everything back, so it reports exactly what a load would do.
    """
    in_extract = len(extract.rows)
    if options.limit is not None:
        extract = dataclasses.replace(extract, rows=extract.rows[: options.limit])
    with conn.transaction() as tx:
        previous = conn.execute(
            "SELECT id, practice FROM extracts WHERE project_slug = %s AND extract_name = %s FOR UPDATE",
            (extract.project_slug, extract.extract_name),
        ).fetchone()
        replaced_practice = False
        if previous is not None and previous[1] and not options.practice:
            _drop_practice_run(conn, previous[0])
            replaced_practice = True
        elif previous is not None and options.practice and not previous[1]:
            raise ExtractError(
                f"extract {extract.extract_name} of {extract.project_slug} was loaded for real:"
                " a practice run is for an extract not loaded yet"
            )
        summary = queue_extract(conn, settings, extract, dry_run=dry_run)
        if dry_run:
            priority = options.priority or (
                _priority(conn, previous[0]) if previous is not None else DEFAULT_PRIORITY)
            raise psycopg.Rollback(tx)  # undoes a replaced practice run too
        extract_id = conn.execute(
            "UPDATE extracts SET practice = %s, priority = coalesce(%s, priority)"
            " WHERE project_slug = %s AND extract_name = %s RETURNING id",
            (options.practice, options.priority, extract.project_slug, extract.extract_name),
        ).fetchone()[0]
        priority = _priority(conn, extract_id)
        if options.practice:
            # A study exported before is not exported again, nor counted exported here.
            conn.execute(
                "UPDATE study_jobs SET state = 'skipped', last_error = %s, state_times = state_times"
                " || jsonb_build_object('skipped', clock_timestamp())"
                " WHERE extract_id = %s AND state = 'exported'",
                (EXPORTED_BEFORE_REASON, extract_id),
            )
    return _summary_json(summary, in_extract, options, priority,
                         loaded_before=previous is not None and not replaced_practice)


def _priority(conn: psycopg.Connection, extract_id: int) -> int:
    return int(conn.execute("SELECT priority FROM extracts WHERE id = %s", (extract_id,)).fetchone()[0])


def _drop_practice_run(conn: psycopg.Connection, extract_id: int) -> None:
    unfinished = conn.execute(
        "SELECT count(*) FROM study_jobs WHERE extract_id = %s AND state = ANY(%s)",
        (extract_id, list(_UNFINISHED)),
    ).fetchone()[0]
    if unfinished:
        raise ExtractError(
            f"a practice run of this extract still has {unfinished} studies on their way:"
            " wait for it to end, or cancel it, before loading it for real"
        )
    conn.execute("DELETE FROM anon_outcomes WHERE job_id IN"
                 " (SELECT id FROM study_jobs WHERE extract_id = %s)", (extract_id,))
    conn.execute("DELETE FROM study_jobs WHERE extract_id = %s", (extract_id,))
    conn.execute("UPDATE extracts SET cancelled_at = NULL, last_served_at = NULL WHERE id = %s",
                 (extract_id,))


def _summary_json(summary: LoadSummary, in_extract: int, options: LoadOptions,
                  priority: int, *, loaded_before: bool) -> dict:
    answer = summary.as_json()
    answer.update({
        "studies_in_extract": in_extract,
        "limit": options.limit,
        "practice": options.practice,
        "priority": priority,
        "loaded_before": loaded_before,
    })
    return answer


def _extract_id(conn: psycopg.Connection, project: str, extract: str) -> int:
    row = conn.execute("SELECT id FROM extracts WHERE project_slug = %s AND extract_name = %s",
                       (project, extract)).fetchone()
    if row is None:
        raise ExtractNotFound(f"no extract {extract!r} of project {project!r}")
    return int(row[0])


def set_priority(conn: psycopg.Connection, project: str, extract: str, priority: int) -> int:
    """Change an extract's priority, also while it runs: the next claim obeys it."""
    LoadOptions(priority=priority)  # validates
    conn.execute("UPDATE extracts SET priority = %s WHERE id = %s",
                 (priority, _extract_id(conn, project, extract)))
    return priority


@dataclass(frozen=True)
class CancelResult:
    withdrawn: int  # queued studies taken out of the queue now
    in_flight: int  # studies past the queue, which finish
    exported: int  # stays recorded

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def cancel_extract(conn: psycopg.Connection, project: str, extract: str) -> CancelResult:
    """Withdraw the extract's queued studies; those in flight finish; exports stay recorded.

    Once cancelled, none of its studies enters the queue again (migration
    0012's trigger withdraws a retried or failed-and-retrying one too).
    Cancelling twice is harmless.
    """
    with conn.transaction():
        extract_id = _extract_id(conn, project, extract)
        conn.execute("UPDATE extracts SET cancelled_at = coalesce(cancelled_at, clock_timestamp())"
                     " WHERE id = %s", (extract_id,))
        # Setting the state to 'queued' again fires the trigger, which withdraws the job;
        # a job held right now (SKIP LOCKED) is past the queue and finishes.
        withdrawn = conn.execute(
            "UPDATE study_jobs SET state = 'queued' WHERE id IN (SELECT id FROM study_jobs"
            " WHERE extract_id = %s AND state = 'queued' FOR UPDATE SKIP LOCKED)",
            (extract_id,),
        ).rowcount
        counts = dict(conn.execute(
            "SELECT state, count(*) FROM study_jobs WHERE extract_id = %s GROUP BY state", (extract_id,)
        ).fetchall())
    return CancelResult(
        withdrawn=withdrawn,
        in_flight=sum(counts.get(s, 0) for s in _UNFINISHED),
        exported=counts.get("exported", 0),
    )
