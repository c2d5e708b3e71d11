"""Calling the lifecycle hooks: `pixl_study_exported` and `pixl_extract_finished`.

Who calls what, and why each fires once:
- anon's pipeline calls `notify_study_exported` right after a job became
  `exported`. A conditional UPDATE (`exported_notified_at IS NULL`) claims
  the call, so with several anon servers, or a worker that lost its lease,
  each study is announced once.
- Then `notify_extract_finished_if_done` claims the extract the same way
  (`extracts.finished_at IS NULL` and no study of it still under way): of
  all servers that see the last study end, exactly one wins the UPDATE.
- Studies also end in raw (`not_found`, `failed`) and in anon outside an
  export (`skipped`, `failed`); anon's worker, while idle, runs
  `notify_pending`, which announces what those paths left: exported jobs not
  announced a minute after their export (a crash between the export and the
  call) and finished extracts.

A claim is made before the hooks run: a crash during a call loses that call
(at most once), never an export. Each plugin's answer is recorded in
`hook_events`; an exception is logged (plugin, hook and job only) and
changes no job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pluggy
import psycopg

from orthanc_plugins.common.hook_events import record_hook_calls
from orthanc_plugins.common.job_queue import TERMINAL_STATES
from orthanc_plugins.common.plugin_support import safe_traceback
from pixl_hooks.plugins import call_lifecycle_hook
from pixl_hooks.types import ExportedStudy, ExportReceipt, ExtractSummary

logger = logging.getLogger(__name__)

STUDY_EXPORTED = "pixl_study_exported"
EXTRACT_FINISHED = "pixl_extract_finished"
# How many announcements one idle round of `notify_pending` makes at most.
PENDING_BATCH = 100
# `notify_pending` leaves a just-exported study this long to the server that exported it,
# which announces it with its receipt.
PENDING_GRACE_SECONDS = 60

# project slug -> the project's ProjectConfig
ProjectLookup = Callable[[str], Any]

_UNFINISHED = f"""
    SELECT 1 FROM study_jobs j WHERE j.extract_id = e.id
    AND (j.state NOT IN ({", ".join(f"'{s}'" for s in TERMINAL_STATES)})
         OR (j.state = 'exported' AND j.exported_notified_at IS NULL))
"""


def notify_study_exported(
    conn: psycopg.Connection,
    project: Any,
    job: Any,
    receipt: ExportReceipt | None,
    secrets: Any,
    manager: pluggy.PluginManager | None = None,
) -> None:
    """Announce an exported study (`job` has `id`), then its extract if that was its last
    study. Never raises: the study is exported whatever happens here."""
    try:
        extract_id = _announce_study(conn, project, job.id, receipt, secrets, manager)
        if extract_id is not None:
            notify_extract_finished_if_done(conn, extract_id, lambda _: project, secrets, manager)
    except Exception as exc:  # noqa: BLE001 - the export is done; nothing here may undo it
        logger.error("job %s: lifecycle hooks not run: %s", job.id, safe_traceback(exc))


def notify_extract_finished_if_done(
    conn: psycopg.Connection,
    extract_id: int,
    project_config: ProjectLookup,
    secrets: Any,
    manager: pluggy.PluginManager | None = None,
) -> bool:
    """Call `pixl_extract_finished` if every study of the extract has ended and nobody
    has called it yet; True if this call was the one."""
    row = conn.execute("SELECT project_slug FROM extracts WHERE id = %s", (extract_id,)).fetchone()
    if row is None:
        return False
    project = project_config(row[0])  # before the claim: a broken project file is retried later
    claimed = conn.execute(
        "UPDATE extracts e SET finished_at = clock_timestamp()"
        f" WHERE e.id = %s AND e.finished_at IS NULL AND NOT EXISTS ({_UNFINISHED})"
        " RETURNING e.extract_name",
        (extract_id,),
    ).fetchone()
    if claimed is None:
        return False
    summary = extract_summary(conn, extract_id)
    calls = call_lifecycle_hook(EXTRACT_FINISHED, manager, project=project,
                                extract_name=claimed[0], summary=summary, secrets=secrets)
    _record(conn, EXTRACT_FINISHED, project.slug, extract_id, None, calls)
    logger.info("extract %s of %s finished (%s)", claimed[0], project.slug, summary)
    return True


def notify_pending(
    conn: psycopg.Connection,
    project_config: ProjectLookup,
    secrets: Any,
    manager: pluggy.PluginManager | None = None,
) -> int:
    """Announce exported studies nobody announced (exported over `PENDING_GRACE_SECONDS`
    ago), then extracts that finished; how many announcements were made. For anon's idle
    worker; never raises."""
    made = 0
    try:
        jobs = conn.execute(
            "SELECT id, project_slug FROM study_jobs WHERE state = 'exported'"
            " AND exported_notified_at IS NULL AND coalesce((state_times->>'exported')::timestamptz,"
            " updated_at) < clock_timestamp() - make_interval(secs => %s) ORDER BY id LIMIT %s",
            (PENDING_GRACE_SECONDS, PENDING_BATCH),
        ).fetchall()
        for job_id, slug in jobs:
            with _tried_again_later("job", job_id):
                made += _announce_study(conn, project_config(slug), job_id, None, secrets,
                                        manager) is not None
        extracts = conn.execute(  # after the studies: an extract waits for its studies' calls
            "SELECT e.id FROM extracts e WHERE e.finished_at IS NULL"
            f" AND NOT EXISTS ({_UNFINISHED}) ORDER BY e.id LIMIT %s", (PENDING_BATCH,),
        ).fetchall()
        for (extract_id,) in extracts:
            with _tried_again_later("extract", extract_id):
                made += notify_extract_finished_if_done(conn, extract_id, project_config,
                                                        secrets, manager)
    except psycopg.Error as exc:
        logger.error("lifecycle hooks: pending announcements stopped: %s", safe_traceback(exc))
    return made


@contextmanager
def _tried_again_later(what: str, internal_id: int) -> Iterator[None]:
    """One announcement failing (a broken project file, the database away) keeps no other
    from being made; what was not claimed is found again on the next round."""
    try:
        yield
    except psycopg.OperationalError:
        raise  # the connection is gone: the round ends, logged once
    except Exception as exc:  # noqa: BLE001 - the idle worker must go on
        logger.error("%s %s: lifecycle hook not called: %s", what, internal_id, safe_traceback(exc))


def extract_summary(conn: psycopg.Connection, extract_id: int) -> ExtractSummary:
    counts: dict[str, int] = dict(conn.execute(
        "SELECT state, count(*) FROM study_jobs WHERE extract_id = %s GROUP BY state", (extract_id,)
    ).fetchall())
    return ExtractSummary(studies=sum(counts.values()), exported=counts.get("exported", 0),
                          not_found=counts.get("not_found", 0), failed=counts.get("failed", 0),
                          skipped=counts.get("skipped", 0))


def _announce_study(
    conn: psycopg.Connection,
    project: Any,
    job_id: int,
    receipt: ExportReceipt | None,
    secrets: Any,
    manager: pluggy.PluginManager | None,
) -> int | None:
    """Claim and make the `pixl_study_exported` call of one job; its extract's ID, or None
    if the job is not exported or was announced already."""
    claimed = conn.execute(
        "UPDATE study_jobs j SET exported_notified_at = clock_timestamp() FROM extracts e"
        " WHERE j.id = %s AND e.id = j.extract_id AND j.state = 'exported'"
        " AND j.exported_notified_at IS NULL"
        " RETURNING j.extract_id, e.extract_name, j.pseudo_patient_id, j.pseudo_study_uid,"
        " j.procedure_occurrence_id",
        (job_id,),
    ).fetchone()
    if claimed is None:
        return None
    extract_id, extract_name, pseudo_patient_id, pseudo_study_uid, procedure_occurrence_id = claimed
    study = ExportedStudy(job_id=job_id, pseudo_patient_id=pseudo_patient_id or "",
                          pseudo_study_uid=pseudo_study_uid or "", extract_name=extract_name,
                          procedure_occurrence_id=procedure_occurrence_id)
    calls = call_lifecycle_hook(STUDY_EXPORTED, manager, project=project, study=study,
                                receipt=receipt, secrets=secrets)
    _record(conn, STUDY_EXPORTED, project.slug, extract_id, job_id, calls)
    return extract_id


def _record(conn: psycopg.Connection, hook: str, slug: str, extract_id: int,
            job_id: int | None, calls: list) -> None:
    record_hook_calls(conn, hook, slug, extract_id, job_id,
                      [(call.plugin, call.error) for call in calls])
    for call in calls:
        if call.error is not None:
            logger.warning("hook %s of plugin %s failed (extract %s, job %s); recorded in "
                           "hook_events", hook, call.plugin, extract_id, job_id)
