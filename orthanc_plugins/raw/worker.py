"""raw's background work: claim a job, make its study complete in raw, hand it to anon.

Several threads per raw instance, each with its own database connection;
the limits they obey live in PostgreSQL (`throttle`), so any number of raw
instances can run them. All state is in the database: a worker killed at any
point loses nothing, its jobs come back when their leases run out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import psycopg

from orthanc_plugins.common import db
from orthanc_plugins.common.orthanc_api import OrthancApi, OrthancError
from orthanc_plugins.common.plugin_support import safe_traceback
from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw import queue, throttle
from orthanc_plugins.raw.handoff import HandoffError, hand_off
from orthanc_plugins.raw.retrieve import (
    AmbiguousStudy,
    RetrieveError,
    RetrieveSettings,
    StudyNotFound,
    retrieve_study,
)

logger = logging.getLogger(__name__)


def retrieve_settings(settings: Settings) -> RetrieveSettings:
    modalities = (settings.vna.name,)
    if settings.secondary_vna_modality:
        modalities += (settings.secondary_vna_modality,)
    return RetrieveSettings(
        modalities=modalities, raw_aet=settings.raw.aet, raw_node=settings.raw.url,
        move_timeout_seconds=settings.move_timeout_seconds,
    )


def worker_connection(settings: Settings) -> psycopg.Connection:
    """A worker's connection: autocommit, and commits not waiting for the disk flush.

    Only a crash of PostgreSQL itself can lose such a commit (the last fraction
    of a second), and that only rewinds a job to an earlier state: every step
    is idempotent (the cache is reused, anon keys hand-offs by job_id), so it
    is done again, never lost. It doubles the claim rate.
    """
    conn = db.connect(settings, autocommit=True)
    conn.execute("SET synchronous_commit TO off")
    return conn


class JobRunner:
    """Processes claimed jobs over one database connection."""

    def __init__(self, settings: Settings, api: OrthancApi, conn: psycopg.Connection, owner: str):
        self.settings = settings
        self.api = api
        self.conn = conn
        self.owner = owner
        self.lease = settings.job_lease_seconds
        self.retrieve_config = retrieve_settings(settings)

    def run_once(self) -> float:
        """Do one job if one is due and allowed; return how long to wait before the next try."""
        job = queue.claim_handoff_job(self.conn, self.owner, self.lease)
        if job is not None:
            self.hand_off(job)
            return 0.0
        job, wait = throttle.claim_transfer_job(self.conn, self.owner, self.lease)
        if job is None:
            return wait
        if self.transfer(job):
            self.hand_off(job)
        return 0.0

    def transfer(self, job: queue.StudyJob) -> bool:
        """Make the study complete in raw; True if the job is now 'cached' and held."""
        try:
            retrieved = retrieve_study(
                self.api, self.conn, job, self.retrieve_config,
                on_transfer_start=lambda: self._move(job, "retrieving", keep=True),
                keep_alive=lambda: queue.renew_lease(self.conn, job.id, self.owner, self.lease),
            )
        except StudyNotFound as exc:
            self._move(job, "not_found", last_error=str(exc))
            return False
        except AmbiguousStudy as exc:
            self._move(job, "failed", last_error=str(exc))
            return False
        except (RetrieveError, OrthancError) as exc:
            self._retry(job, str(exc), "queued")
            return False
        if retrieved.from_cache:
            throttle.refund_token(self.conn)
        logger.info("job %s: study cached in raw (%s, %d instances moved)", job.id,
                    "from cache" if retrieved.from_cache else "from the archive", retrieved.moved_instances)
        job.raw_study_id = retrieved.raw_study_id
        return self._move(job, "cached", keep=True, raw_node=self.settings.raw.url,
                          raw_study_id=retrieved.raw_study_id, last_error=None)

    def hand_off(self, job: queue.StudyJob) -> None:
        try:
            hand_off(self.settings, job.id, job.project_slug, job.raw_study_id or "")
        except HandoffError as exc:
            self._retry(job, str(exc), "cached")
            return
        self._move(job, "anonymising", last_error=None)
        logger.info("job %s: handed to anon", job.id)

    def _move(self, job: queue.StudyJob, state: str, *, keep: bool = False, **columns: object) -> bool:
        moved = queue.move_job(self.conn, job.id, self.owner, state,
                               lease_seconds=self.lease if keep else None, **columns)
        if not moved:
            logger.warning("job %s: lease lost before '%s'; another worker has it", job.id, state)
        return moved

    def _retry(self, job: queue.StudyJob, error: str, state: str) -> None:
        new_state = queue.schedule_retry(
            self.conn, job, self.owner, error, state=state,
            base=self.settings.retry_base_seconds, cap=self.settings.retry_max_seconds,
            max_attempts=self.settings.max_attempts,
        )
        logger.warning("job %s: attempt %d failed (%s); now %s", job.id, job.attempts, error, new_state)


class Worker:
    """The worker threads of one raw instance; `start()` and a clean `stop()`."""

    def __init__(
        self,
        settings: Settings,
        api: OrthancApi,
        *,
        threads: int | None = None,
        connect: Callable[[], psycopg.Connection] | None = None,
        max_wait: float = 1.0,
    ):
        self.settings = settings
        self.api = api
        self.threads = threads or max(1, settings.max_transfers_in_flight)
        self._connect = connect or (lambda: worker_connection(settings))
        self._max_wait = max_wait
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Unique per process start: a restarted instance never mistakes a dead one's leases for its own.
        name = settings.instance_name or "raw"
        self.owner_prefix = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def start(self) -> None:
        with self._connect() as conn:
            throttle.ensure_controls(conn, self.settings)
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=(f"{self.owner_prefix}/{i}",),
                             name=f"pixl-raw-worker-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for thread in self._threads:
            thread.start()
        logger.info("raw worker started: %d threads as %s", self.threads, self.owner_prefix)

    def stop(self, timeout: float = 30) -> None:
        """Finish the jobs in hand and stop; a job cut short comes back by its lease."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _loop(self, owner: str) -> None:
        conn: psycopg.Connection | None = None
        while not self._stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                wait = JobRunner(self.settings, self.api, conn, owner).run_once()
            except psycopg.Error as exc:
                # The database went away: reconnect after a pause; leases protect the jobs.
                logger.warning("raw worker %s: database error %s; reconnecting", owner, type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                wait = self._max_wait
            except Exception as exc:  # a bug must not kill the worker; the job returns by its lease
                logger.error("raw worker %s: unexpected %s", owner, safe_traceback(exc))
                wait = self._max_wait
            if wait:
                self._stopping.wait(min(wait, self._max_wait))
        if conn is not None:
            conn.close()
