"""The raw plugin's service: REST routes and background work, without `orthanc`."""

from __future__ import annotations

from orthanc_plugins.common import db
from orthanc_plugins.common.orthanc_api import OrthancApi
from orthanc_plugins.common.plugin_support import ApiRequest, ApiResponse, health
from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw import api
from orthanc_plugins.raw.worker import Worker


class RawService:
    def __init__(self, settings: Settings, orthanc: OrthancApi):
        self.settings = settings
        self.orthanc = orthanc
        self.worker = Worker(settings, orthanc)
        self.api_context = api.ApiContext(settings, db.ThreadConnections(settings), orthanc, self.health)

    def start(self) -> None:
        """Called once Orthanc has started: start the background workers."""
        self.worker.start()

    def stop(self) -> None:
        """Called when Orthanc stops: stop the workers cleanly."""
        self.worker.stop()

    def health(self) -> dict:
        """raw's health, its workers included: `GET /pixl/health` and the pipeline's problems."""
        return health(self.settings, "raw", workers=self.worker.beats.report())

    def handle(self, request: ApiRequest) -> ApiResponse:
        if request.path == "health" and request.method == "GET":
            return ApiResponse(200, self.health())
        return api.handle(self.api_context, request)
