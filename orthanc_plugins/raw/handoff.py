"""Handing a cached study to anon: `POST {anon}/pixl/studies`.

anon answers 2xx once it has recorded the study for de-identification; only
then does the job leave raw's hands ('anonymising'). Repeating a hand-off
after a crash is safe: anon keys what it records by `job_id`.
"""

from __future__ import annotations

import requests

from orthanc_plugins.common.settings import Settings


class HandoffError(RuntimeError):
    """anon did not record the study: retry later. `outage`: anon could not be reached
    or failed itself (5xx), as opposed to refusing this study (4xx)."""

    def __init__(self, message: str, *, outage: bool):
        super().__init__(message)
        self.outage = outage


def hand_off(settings: Settings, job_id: int, project: str, raw_study_id: str, timeout: float = 30) -> None:
    payload = {
        "job_id": job_id, "project": project, "raw_study_id": raw_study_id, "raw_url": settings.raw.url,
    }
    url = settings.anon.url + "/pixl/studies"
    try:
        response = requests.post(url, json=payload, auth=settings.orthanc_auth, timeout=timeout,
                                 verify=settings.http_verify)
    except requests.RequestException as exc:
        raise HandoffError(f"hand-off to anon failed: {type(exc).__name__}", outage=True) from None
    if not 200 <= response.status_code < 300:
        raise HandoffError(f"hand-off to anon answered HTTP {response.status_code}",
                           outage=response.status_code >= 500)
