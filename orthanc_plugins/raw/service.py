"""The raw plugin's service: REST routes and background work, without `orthanc`."""

from __future__ import annotations

from orthanc_plugins.common.orthanc_api import OrthancApi
from orthanc_plugins.common.plugin_support import ApiError, ApiRequest, ApiResponse, health
from orthanc_plugins.common.settings import Settings


class RawService:
    def __init__(self, settings: Settings, orthanc: OrthancApi):
        self.settings = settings
        self.orthanc = orthanc

    def start(self) -> None:
        """Called once Orthanc has started: start the background workers."""

    def stop(self) -> None:
        """Called when Orthanc stops: stop the workers cleanly."""

    def handle(self, request: ApiRequest) -> ApiResponse:
        if request.path == "health" and request.method == "GET":
            return ApiResponse(200, health(self.settings, "raw"))
        raise ApiError(404, f"no route {request.method} /pixl/{request.path}")
