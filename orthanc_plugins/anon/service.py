"""The anon plugin's service: the hand-off route and the de-identification worker."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import psycopg

from orthanc_plugins.anon import copies
from orthanc_plugins.anon.lifecycle import notify_pending
from orthanc_plugins.anon.pipeline import StudyAnonymiser
from orthanc_plugins.common import db, metrics
from orthanc_plugins.common.hook_events import recent_hook_errors
from orthanc_plugins.common.liveness import ProcessHeartbeat, WorkerBeats
from orthanc_plugins.common.orthanc_api import HttpOrthanc, OrthancApi
from orthanc_plugins.common.plugin_support import (
    ApiError,
    ApiRequest,
    ApiResponse,
    health,
    safe_traceback,
)
from orthanc_plugins.common.secrets import open_secret_store
from orthanc_plugins.common.settings import Settings
from pixl_hooks.plugins import list_destinations, list_plugins

logger = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.2
# While idle, the worker looks this often for lifecycle hook calls left to make (lifecycle.py).
PENDING_HOOKS_SECONDS = 2.0


class AnonService:
    def __init__(self, settings: Settings, orthanc: OrthancApi):
        self.settings = settings
        self.orthanc = orthanc
        # Unique per process start, so that a restarted anon never takes a dead one's leases for its own.
        self.owner_prefix = (f"anon@{socket.gethostname()}:{settings.anon.http_port}:{os.getpid()}"
                             f":{uuid.uuid4().hex[:6]}")
        self.secrets = open_secret_store(settings)
        self.beats = WorkerBeats(stuck_after_seconds=max(300.0, 3 * settings.job_lease_seconds))
        self._connect = lambda: db.connect(settings, autocommit=True)
        # The project check of hand-offs; the workers each have their own anonymiser.
        self.anonymiser = self._anonymiser(f"{self.owner_prefix}/handoff")
        self.heartbeat = ProcessHeartbeat(
            self._connect, self.owner_prefix, "anon", settings.anon.url,
            chores=[self._delete_expired_copies],
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _anonymiser(self, owner: str, beat=lambda: None) -> StudyAnonymiser:
        return StudyAnonymiser(self.settings, self.secrets, owner, self._connect, beat=beat)

    def start(self) -> None:
        self._stop.clear()
        self.beats.clear()
        self._threads = []
        for i in range(self.settings.anon_workers):
            thread = threading.Thread(target=self._work, args=(f"{self.owner_prefix}/{i}",),
                                      name=f"pixl-anon-worker-{i}", daemon=True)
            self.beats.register(thread.name, thread)
            self._threads.append(thread)
        self.heartbeat.start()
        for thread in self._threads:
            thread.start()
        logger.info("anon started %d workers as %s", len(self._threads), self.owner_prefix)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.heartbeat.stop()

    def _work(self, owner: str) -> None:
        name = threading.current_thread().name
        anonymiser = self._anonymiser(owner, beat=lambda: self.beats.beat(name))
        while not self._stop.is_set():
            self.beats.beat(name)
            try:
                with self._connect() as conn:
                    next_pending = 0.0
                    while not self._stop.is_set():
                        self.beats.beat(name)
                        if anonymiser.run_once(conn):
                            continue
                        if time.monotonic() >= next_pending:
                            notify_pending(conn, lambda slug: anonymiser.project(slug).config,
                                           anonymiser.secrets)
                            next_pending = time.monotonic() + PENDING_HOOKS_SECONDS
                        self._stop.wait(IDLE_POLL_SECONDS)
            except psycopg.Error as exc:
                logger.warning("anon worker %s: database error %s; reconnecting", owner, type(exc).__name__)
                self._stop.wait(1)
            except Exception as exc:  # a bug must not kill the worker; the job returns by its lease
                logger.error("anon worker %s: %s; restarting in 5 s", owner, safe_traceback(exc))
                self._stop.wait(5)

    def _delete_expired_copies(self, conn: psycopg.Connection) -> None:
        settings = self.settings
        anon = HttpOrthanc(settings.anon.local_url, settings.orthanc_auth, verify=settings.http_verify)
        copies.delete_expired_copies(conn, anon, settings.anon.url, settings.anon_keep_hours)

    def handle(self, request: ApiRequest) -> ApiResponse:
        route = (request.method, request.path)
        if route == ("GET", "health"):
            return ApiResponse(200, health(self.settings, "anon", workers=self.beats.report()))
        if route == ("POST", "studies"):
            return self.receive_study(request.json())
        if route == ("GET", "destinations"):
            return ApiResponse(200, {"destinations": list_destinations()})
        if route == ("GET", "plugins"):
            with db.connect(self.settings) as conn:
                errors = recent_hook_errors(conn)
            return ApiResponse(200, {"plugins": list_plugins(), "hook_errors": errors})
        if route == ("GET", "metrics"):
            with db.connect(self.settings, autocommit=True) as conn:
                return ApiResponse(200, metrics.render(conn, self.orthanc, "anon"), metrics.CONTENT_TYPE)
        raise ApiError(404, f"no route {request.method} /pixl/{request.path}")

    def receive_study(self, body: dict) -> ApiResponse:
        """raw hands over a cached study: confirm that anon knows the job and will take it.

        raw moves the job to `anonymising` once this answers 2xx; the worker
        then claims it from the database, so a receipt is never lost.
        """
        try:
            job_id, project = int(body["job_id"]), str(body["project"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "a hand-off needs job_id (integer) and project") from exc
        with db.connect(self.settings) as conn:
            row = conn.execute(
                "SELECT state, project_slug FROM study_jobs WHERE id = %s", (job_id,)
            ).fetchone()
        if row is None or row[1] != project:
            raise ApiError(404, f"job {job_id} of project {project} is unknown to anon")
        state = row[0]
        if state == "exported":
            return ApiResponse(200, {"accepted": False, "job_id": job_id,
                                     "reason": "already exported; nothing to do"})
        if state not in ("cached", "anonymising"):
            raise ApiError(409, f"job {job_id} is {state}, not ready for anon")
        try:
            self.anonymiser.project(project)
        except Exception as exc:
            raise ApiError(422, f"project {project} cannot be de-identified: {exc}") from exc
        return ApiResponse(200, {"accepted": True, "job_id": job_id})
