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
from orthanc_plugins.common.failures import classify
from orthanc_plugins.common.job_queue import RetryPolicy
from orthanc_plugins.common.leases import LeaseKeeper, LeaseLost
from orthanc_plugins.common.liveness import ProcessHeartbeat, WorkerBeats
from orthanc_plugins.common.orthanc_api import OrthancApi
from orthanc_plugins.common.plugin_support import safe_traceback
from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw import cache_hold, queue, throttle
from orthanc_plugins.raw.cache_hold import CacheFull
from orthanc_plugins.raw.handoff import hand_off
from orthanc_plugins.raw.retrieve import (
    AmbiguousStudy,
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
        move_timeout_seconds=settings.move_timeout_seconds, max_storage_mb=settings.raw_max_storage_mb,
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

    def __init__(self, settings: Settings, api: OrthancApi, conn: psycopg.Connection, owner: str,
                 connect: Callable[[], psycopg.Connection], beat: Callable[[], None] = lambda: None):
        self.settings = settings
        self.api = api
        self.conn = conn
        self.owner = owner
        self._connect = connect
        self._beat = beat
        self.lease = settings.job_lease_seconds
        self.policy = RetryPolicy.from_settings(settings)
        self.retrieve_config = retrieve_settings(settings)

    def run_once(self) -> float:
        """Do one job if one is due and allowed; return how long to wait before the next try."""
        job = queue.claim_handoff_job(self.conn, self.owner, self.lease, self.policy.max_crashes)
        if job is not None:
            self.hand_off(job)
            return 0.0
        job, wait = throttle.claim_transfer_job(
            self.conn, self.owner, self.lease, max_crashes=self.policy.max_crashes,
            raw_node=self.settings.raw.url, hold_limit_bytes=self.settings.raw_hold_limit_bytes,
        )
        if job is None:
            return wait
        try:
            with LeaseKeeper(self._connect, job.id, self.owner, self.lease, self._beat) as keeper:
                cached = self.transfer(job, keeper)
        except LeaseLost:
            logger.warning("job %s: lease lost during the transfer; another worker has it", job.id)
            return 0.0
        if cached:
            self.hand_off(job)
        return 0.0

    def transfer(self, job: queue.StudyJob, keeper: LeaseKeeper) -> bool:
        """Make the study complete in raw; True if the job is now 'cached' and held."""
        def start_transfer(instances: int) -> None:
            if not cache_hold.reserve_cache_space(self.conn, job.id, self.owner, self.settings.raw.url,
                                                  instances, self.settings.raw_hold_limit_bytes):
                raise CacheFull()
            self._move(job, "retrieving", keep=True)

        try:
            retrieved = retrieve_study(self.api, self.conn, job, self.retrieve_config,
                                       on_transfer_start=start_transfer, check_lease=keeper.check)
            keeper.check()
            patient_id, size, instances = cache_hold.protect_study(self.api, retrieved.raw_study_id)
        except LeaseLost:
            raise
        except StudyNotFound as exc:
            self._move(job, "not_found", last_error=str(exc))
            return False
        except AmbiguousStudy as exc:
            self._move(job, "failed", last_error=str(exc))
            return False
        except CacheFull:
            # Not the study's fault: it waits for anon to catch up, and its token goes back.
            queue.release_job(self.conn, job.id, self.owner, "queued", cache_hold.CACHE_FULL_DELAY_SECONDS)
            throttle.refund_token(self.conn)
            return False
        except Exception as exc:
            self._fail(job, exc, "queued")
            return False
        if retrieved.from_cache:
            throttle.refund_token(self.conn)
        logger.info("job %s: study cached in raw (%s, %d instances moved)", job.id,
                    "from cache" if retrieved.from_cache else "from the archive", retrieved.moved_instances)
        job.raw_study_id = retrieved.raw_study_id
        return self._move(job, "cached", keep=True, raw_node=self.settings.raw.url,
                          raw_study_id=retrieved.raw_study_id, raw_patient_id=patient_id,
                          raw_bytes=size, raw_instances=instances, raw_protected=True, last_error=None)

    def hand_off(self, job: queue.StudyJob) -> None:
        try:
            hand_off(self.settings, job.id, job.project_slug, job.raw_study_id or "")
        except Exception as exc:
            self._fail(job, exc, "cached")
            return
        self._move(job, "anonymising", last_error=None)
        logger.info("job %s: handed to anon", job.id)

    def _move(self, job: queue.StudyJob, state: str, *, keep: bool = False, **columns: object) -> bool:
        moved = queue.move_job(self.conn, job.id, self.owner, state,
                               lease_seconds=self.lease if keep else None, **columns)
        if not moved:
            logger.warning("job %s: lease lost before '%s'; another worker has it", job.id, state)
        return moved

    def _fail(self, job: queue.StudyJob, exc: Exception, state: str) -> None:
        failure = classify(exc)
        if failure.terminal:
            self._move(job, "failed", last_error=failure.reason[:500])
            new_state: str | None = "failed"
        else:
            new_state = queue.schedule_retry(self.conn, job.id, self.owner, failure.reason, self.policy,
                                             state=state, outage=failure.outage)
        logger.warning("job %s: %s (%s); now %s", job.id, failure.reason,
                       "outage" if failure.outage else "attempt failed", new_state or "held elsewhere")


class Worker:
    """The worker threads of one raw instance; `start()` and a clean `stop()`.

    The threads start whether or not the database is up: each connects (and
    reconnects after any database error) by itself, so raw started before
    PostgreSQL, or across a restart of it, works as soon as it can.
    """

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
        # A worker is stuck if it made no progress (a loop, a lease renewal) for this long.
        self.beats = WorkerBeats(stuck_after_seconds=max(300.0, 3 * settings.job_lease_seconds))
        self.heartbeat = ProcessHeartbeat(
            lambda: db.connect(settings, autocommit=True), self.owner_prefix, "raw", settings.raw.url,
            chores=[lambda conn: cache_hold.release_protections(conn, api, settings.raw.url)],
        )

    def start(self) -> None:
        self._stopping.clear()
        self.beats.clear()
        self._threads = []
        for i in range(self.threads):
            thread = threading.Thread(target=self._loop, args=(f"{self.owner_prefix}/{i}",),
                                      name=f"pixl-raw-worker-{i}", daemon=True)
            self.beats.register(thread.name, thread)
            self._threads.append(thread)
        self.heartbeat.start()
        for thread in self._threads:
            thread.start()
        logger.info("raw worker started: %d threads as %s", self.threads, self.owner_prefix)

    def stop(self, timeout: float = 30) -> None:
        """Finish the jobs in hand and stop; a job cut short comes back by its lease."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.heartbeat.stop()

    def _loop(self, owner: str) -> None:
        name = threading.current_thread().name
        conn: psycopg.Connection | None = None
        while not self._stopping.is_set():
            self.beats.beat(name)
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                    throttle.ensure_controls(conn, self.settings)
                runner = JobRunner(self.settings, self.api, conn, owner, self._connect,
                                   beat=lambda: self.beats.beat(name))
                wait = runner.run_once()
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
