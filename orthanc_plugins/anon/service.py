"""The anon plugin's service: the hand-off route and the de-identification worker."""

from __future__ import annotations

import logging
import socket
import threading

from orthanc_plugins.anon.pipeline import StudyAnonymiser
from orthanc_plugins.common import db, metrics
from orthanc_plugins.common.orthanc_api import OrthancApi
from orthanc_plugins.common.plugin_support import (
    ApiError,
    ApiRequest,
    ApiResponse,
    health,
    safe_traceback,
)
from orthanc_plugins.common.secrets import open_secret_store
from orthanc_plugins.common.settings import Settings
from pixl_hooks.plugins import list_destinations

logger = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.2


class AnonService:
    def __init__(self, settings: Settings, orthanc: OrthancApi):
        self.settings = settings
        self.orthanc = orthanc
        owner = f"anon@{socket.gethostname()}:{settings.anon.http_port}"
        self.anonymiser = StudyAnonymiser(settings, orthanc, open_secret_store(settings), owner)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="pixl-anon-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                with db.connect(self.settings, autocommit=True) as conn:
                    while not self._stop.is_set():
                        if not self.anonymiser.run_once(conn):
                            self._stop.wait(IDLE_POLL_SECONDS)
            except Exception as exc:  # a bug must not kill the worker; the job returns by its lease
                logger.error("anon worker: %s; restarting in 5 s", safe_traceback(exc))
                self._stop.wait(5)

    def handle(self, request: ApiRequest) -> ApiResponse:
        route = (request.method, request.path)
        if route == ("GET", "health"):
            return ApiResponse(200, health(self.settings, "anon"))
        if route == ("POST", "studies"):
            return self.receive_study(request.json())
        if route == ("GET", "destinations"):
            return ApiResponse(200, {"destinations": list_destinations()})
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
