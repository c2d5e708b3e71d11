"""raw's REST API routes as plain functions, against a real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.plugin_support import ApiError, ApiRequest
from orthanc_plugins.raw import api


@pytest.fixture
def ctx(pixl_settings):
    return api.ApiContext(pixl_settings, lambda: pixl_db.connect(pixl_settings, autocommit=True))


def call(ctx, method, path, body=b"", query=None, content_type="application/json"):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    request = ApiRequest(method, path, query or {}, body, {"content-type": content_type})
    return api.handle(ctx, request)


def test_csv_upload_dry_run_then_load_then_list(ctx, conn, pixl_format_inputs):
    body = (pixl_format_inputs / "series-level-querying" / "all-series.csv").read_bytes()
    dry = call(ctx, "POST", "extracts", body, {"dry_run": "1", "filename": "all-series.csv"}, "text/csv")
    assert dry.payload == {
        "project": "test-extract-uclh-omop-cdm", "extract": "2023-12-07t14-08-58", "studies": 1,
        "queued": 1, "already_exported": 0, "modalities": ["DX", "CR"],
        "destination": {"dicom": "ftps", "parquet": "ftps"}, "dry_run": True,
        "studies_in_extract": 1, "limit": None, "practice": False, "priority": 1, "loaded_before": False,
        # This test's secret store is empty: the operator is told before confirming.
        "destination_problems": [f"secret 'test--ftp--{name}' is not set"
                                 for name in ("host", "port", "username", "password")],
    }
    assert call(ctx, "GET", "extracts").payload == {"extracts": []}

    loaded = call(ctx, "POST", "extracts", body, {"filename": "all-series.csv"}, "text/csv")
    assert (loaded.payload["queued"], loaded.payload["dry_run"]) == (1, False)
    (listed,) = call(ctx, "GET", "extracts").payload["extracts"]
    assert listed["total"] == 1 and listed["counts"] == {"queued": 1}
    assert listed["eta_seconds"] is None and listed["last_error"] is None
    assert "987654321" not in json.dumps(listed)


def test_bad_upload_is_a_400_naming_the_file(ctx, pixl_format_inputs):
    body = (pixl_format_inputs / "omop-resources" / "batch_input.csv").read_bytes()
    with pytest.raises(ApiError) as error:
        call(ctx, "POST", "extracts", body, {"filename": "batch_input.csv"}, "text/csv")
    assert error.value.status == 400
    assert "unknown project 'i-am-a-project'" in error.value.message


def test_failures_are_listed_and_retried(ctx, conn, pixl_format_inputs):
    body = (pixl_format_inputs / "series-level-querying" / "all-series.csv").read_bytes()
    call(ctx, "POST", "extracts", body, {}, "text/csv")
    conn.execute("UPDATE study_jobs SET state = 'not_found', attempts = 1, last_error = 'no archive holds the study'")

    (failure,) = call(ctx, "GET", "failures", query={"project": "test-extract-uclh-omop-cdm"}).payload["failures"]
    assert (failure["job_id"], failure["state"], failure["last_error"]) == (1, "not_found", "no archive holds the study")
    assert set(failure) == {"job_id", "project", "extract", "state", "attempts", "last_error", "updated_at"}
    assert call(ctx, "POST", "failures/retry", {"job_ids": [1]}).payload == {"retried": 1}
    assert conn.execute("SELECT state FROM study_jobs").fetchone()[0] == "queued"
    with pytest.raises(ApiError, match="job_ids"):
        call(ctx, "POST", "failures/retry", {"job_ids": "all"})


def test_controls_change_and_reject_bad_values(ctx, pixl_settings):
    assert call(ctx, "GET", "controls").payload == {
        "max_in_flight": pixl_settings.max_transfers_in_flight,
        "studies_per_second": pixl_settings.studies_per_second, "paused": False, "in_flight": 0,
    }
    changed = call(ctx, "PUT", "controls", {"max_in_flight": 2, "studies_per_second": 0.5, "paused": True})
    assert changed.payload == {"max_in_flight": 2, "studies_per_second": 0.5, "paused": True, "in_flight": 0}
    for bad in ({"max_in_flight": -1}, {"studies_per_second": 0}, {"paused": "yes"}, {"speed": 1}):
        with pytest.raises(ApiError) as error:
            call(ctx, "PUT", "controls", bad)
        assert error.value.status == 400


def test_export_of_an_unknown_extract_is_404(ctx):
    with pytest.raises(ApiError) as error:
        call(ctx, "POST", "exports", {"project": "p", "extract": "e"})
    assert error.value.status == 404
    assert call(ctx, "GET", "exports").payload == {"exports": []}


def test_unknown_route_is_404(ctx):
    with pytest.raises(ApiError) as error:
        call(ctx, "DELETE", "extracts")
    assert error.value.status == 404
