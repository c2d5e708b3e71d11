"""Fixtures of the pixl-tui tests.

Behaviour tests run against the real stack (`stack`). Layout snapshots need
content that never changes, so they use `fixed_client`: the real RawClient,
whose HTTP session answers from fixed payloads of docs/rest-api.md.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

from tui.client import ClientConfig, RawClient

# Times are shown in the operator's local time: the same zone for every run of the snapshots.
os.environ["TZ"] = "UTC"
time.tzset()

FIXED_URL = "http://raw.pixl.test"
# These tests drive pixl-tui against local servers that speak plain HTTP.
os.environ.setdefault("PIXL_TUI_PLAIN_HTTP_LOOPBACK", "1")

FIXED_PAYLOADS: dict[str, dict] = {
    "/pixl/health": {
        "service": "raw",
        "version": "0.1.0",
        "database": "ok",
        "schema_version": 3,
        "healthy": True,
    },
    "/pixl/pipeline": {
        "waiting_for_anon": 5,
        "exporting": 1,
        "raw_cache": {"used_mb": 812.4, "max_mb": 10240, "held_for_anon_mb": 420.0,
                      "hold_limit_mb": 5120},
        "anon_instances_per_second": 85.3,
        "problems": ["anon: disk nearly full: 900 MB free, below 1024 MB"],
    },
    "/pixl/extracts": {
        "extracts": [
            {
                "project": "test-extract-uclh-omop-cdm",
                "extract": "2023-12-07t14-08-58",
                "loaded_at": "2024-05-01T09:00:00+00:00",
                "total": 40,
                "counts": {
                    "queued": 10,
                    "retrieving": 3,
                    "anonymising": 2,
                    "exported": 22,
                    "not_found": 2,
                    "failed": 1,
                },
                "throughput_per_minute": 12.5,
                "eta_seconds": 72,
                "last_error": "C-MOVE from the VNA timed out after 120 s",
                "last_error_at": "2024-05-01T09:12:00+00:00",
                "priority": 3,
                "practice": False,
                "cancelled_at": None,
            },
            {
                "project": "ms-pinpoint-test",
                "extract": "2023-01-01t00-01-00",
                "loaded_at": "2024-04-30T17:00:00+00:00",
                "total": 3,
                "counts": {"exported": 3},
                "throughput_per_minute": None,
                "eta_seconds": None,
                "last_error": None,
                "last_error_at": None,
                "priority": 1,
                "practice": True,
                "cancelled_at": None,
            },
        ]
    },
    "/pixl/failures": {
        "failures": [
            {
                "job_id": 17,
                "project": "test-extract-uclh-omop-cdm",
                "extract": "2023-12-07t14-08-58",
                "state": "failed",
                "attempts": 3,
                "last_error": "C-MOVE from the VNA timed out after 120 s",
                "updated_at": "2024-05-01T09:12:00+00:00",
            },
            {
                "job_id": 21,
                "project": "test-extract-uclh-omop-cdm",
                "extract": "2023-12-07t14-08-58",
                "state": "not_found",
                "attempts": 1,
                "last_error": "the VNA has no such study",
                "updated_at": "2024-05-01T09:05:00+00:00",
            },
        ]
    },
    "/pixl/controls": {
        "max_in_flight": 5,
        "studies_per_second": 2.5,
        "paused": False,
        "in_flight": 3,
    },
    "/pixl/controls/schedule": {
        "schedule": {
            "time_zone": "Europe/London",
            "windows": [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "08:00",
                    "end": "20:00",
                    "max_in_flight": 1,
                    "studies_per_second": 1 / 60,
                }
            ],
        },
        "effective": {
            "in_flight": 3,
            "max_in_flight": 1,
            "studies_per_second": 1 / 60,
            "paused": False,
            "window": "mon,tue,wed,thu,fri 08:00-20:00",
            "next_change_at": "2024-05-01T20:00:00+01:00",
            "time_zone": "Europe/London",
        },
    },
    "/pixl/plugins": {
        "plugins": [
            {"name": "pixl_hooks.destinations.ftps", "module": "pixl_hooks.destinations.ftps",
             "hooks": ["pixl_check_destination", "pixl_destinations", "pixl_export_dicom_study",
                       "pixl_export_parquet"],
             "destinations": ["ftpes", "ftps"]},
            {"name": "research_db", "module": "research_db.hooks",
             "hooks": ["pixl_extract_finished", "pixl_study_exported"], "destinations": []},
        ],
        "hook_errors": [
            {"hook": "pixl_study_exported", "plugin": "research_db", "project": "test-project",
             "extract": "2024-01-02t03-04-05", "job_id": 17,
             "error": "did not return within 60 s; left running, not called again until it does",
             "recorded_at": "2024-01-02T03:20:00+00:00"},
            {"hook": "pixl_extract_finished", "plugin": "research_db", "project": "test-project",
             "extract": "2023-12-01t00-00-00", "job_id": None,
             "error": "ConnectionError: research database down",
             "recorded_at": "2024-01-01T09:00:00+00:00"},
        ],
    },
    "/pixl/exports": {
        "exports": [
            {
                "export_id": 4,
                "project": "ms-pinpoint-test",
                "extract": "2023-01-01t00-01-00",
                "state": "done",
                "started_at": "2024-04-30T18:00:00+00:00",
                "finished_at": "2024-04-30T18:00:05+00:00",
                "export_dir": "/srv/pixl/exports/ms-pinpoint-test/all_extracts/2023-01-01t00-01-00",
                "destination": "ftps",
                "uploaded_to": "ms-pinpoint-test/2023-01-01t00-01-00/parquet",
                "error": None,
            },
        ]
    },
}


# The archive's answers (POST, their criteria travel in the body).
FIXED_POST_PAYLOADS: dict[str, dict] = {
    "/pixl/vna/echo": {"ok": True, "modality": "vna", "seconds": 0.012, "error": None},
    "/pixl/vna/find": {
        "modality": "vna",
        "studies": [
            {"study_date": "2021-03-04", "modalities": ["CT"], "series": 3, "instances": 240,
             "cached": "complete"},
            {"study_date": "2022-07-19", "modalities": ["MR", "SR"], "series": 6, "instances": 512,
             "cached": "partial"},
            {"study_date": "2023-11-30", "modalities": ["DX"], "series": 1, "instances": 2,
             "cached": "no"},
        ],
    },
}


class FixedPayloadAdapter(BaseAdapter):
    """Answers GETs from FIXED_PAYLOADS (and the archive's POSTs from FIXED_POST_PAYLOADS),
    the way raw would; anything else is a 404."""

    def send(self, request, **_kwargs):
        response = requests.Response()
        payloads = FIXED_POST_PAYLOADS if request.method == "POST" else FIXED_PAYLOADS
        payload = payloads.get(urlsplit(request.url).path)
        response.status_code = 200 if payload is not None and request.method in ("GET", "POST") else 404
        body = payload if response.status_code == 200 else {"error": "not in the fixed payloads"}
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


@pytest.fixture
def fixed_client() -> RawClient:
    session = requests.Session()
    session.mount(FIXED_URL, FixedPayloadAdapter())
    return RawClient(ClientConfig(FIXED_URL, "pixl", "secret"), session=session)


@pytest.fixture
def make_client() -> Iterator[Callable[..., RawClient]]:
    """A RawClient for a URL and credentials; closed at the end of the test."""
    clients: list[RawClient] = []

    def make(url: str, username: str, password: str) -> RawClient:
        client = RawClient(ClientConfig(url, username, password))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


TEST_PROJECT = "test-extract-uclh-omop-cdm"  # a test project of the session stack (tests/pixl_inputs.py)
_cohort_numbers = itertools.count(1)


@pytest.fixture
def write_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Write a CSV cohort of made-up studies (none is in the VNA, so each ends
    not_found) as an extract of its own: every call gets a new timestamp."""

    def write(studies: int = 3, project: str = TEST_PROJECT) -> Path:
        number = next(_cohort_numbers)
        generated = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
            hours=os.getpid() % 1000, minutes=number
        )
        path = tmp_path / f"cohort-{number}.csv"
        header = (
            "procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,"
            "study_date,study_uid,participant_id"
        )
        lines = [header]
        for study in range(studies):
            lines.append(
                f"{number * 100 + study},tui-mrn-{number}-{study},TUI{number:03d}{study:03d},"
                f"{project},{generated.isoformat()},2022-01-01,"
                f"1.2.826.0.1.3680043.10.1.{number}.{study},"
            )
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture
def raw_client(stack, make_client) -> RawClient:
    """A client of the stack's raw plugin, with the stack's credentials."""
    return make_client(stack.settings.raw.url, *stack.settings.orthanc_auth)


@pytest.fixture
def restore_controls(raw_client: RawClient) -> Iterator[RawClient]:
    """Put the shared transfer controls back as they were, whatever the test did."""
    before = raw_client.controls()
    yield raw_client
    raw_client.set_controls(
        max_in_flight=before.max_in_flight,
        studies_per_second=before.studies_per_second,
        paused=before.paused,
    )


@pytest.fixture
def stack_env(stack, monkeypatch) -> dict[str, str]:
    """The environment pixl-tui reads, pointing at the stack."""
    env = {
        "PIXL_RAW_URL": stack.settings.raw.url,
        "ORTHANC_USERNAME": stack.settings.orthanc_username,
        "ORTHANC_PASSWORD": stack.settings.orthanc_password,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
