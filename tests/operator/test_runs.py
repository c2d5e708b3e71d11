"""Practice runs, cancel mid-extract and the metrics, against the real stack."""

from __future__ import annotations

import collections

import pytest
import requests
from operator_helpers import (
    archive_studies,
    cohort_csv,
    jobs,
    upload_csv,
    wait_for_jobs,
    wait_until_ended,
)
from prometheus_client.parser import text_string_to_metric_families

from orthanc_plugins.anon.practice import PRACTICE_REASON
from orthanc_plugins.common.orthanc_api import find_study
from orthanc_plugins.raw import throttle
from orthanc_plugins.raw.extract_controls import CANCELLED_REASON
from tui import exit_codes
from tui.cli import main

pytestmark = pytest.mark.stack


def _ftps_files(stack) -> set[str]:
    return {str(p.relative_to(stack.stack.ftps_root)) for p in stack.stack.ftps_root.rglob("*") if p.is_file()}


def test_a_practice_run_exports_nothing_keeps_nothing_and_ends_with_the_usual_summary(
    stack, conn, controls, tmp_path, monkeypatch, capsys
):
    throttle.update_controls(conn, max_in_flight=5, studies_per_second=50, paused=False)
    studies = archive_studies(stack.settings, tmp_path, 3)
    path = cohort_csv(studies, tmp_path)
    at_destination = _ftps_files(stack)
    id_map_rows = conn.execute("SELECT count(*) FROM deid_id_map").fetchone()[0]
    for name, value in (("PIXL_RAW_URL", stack.settings.raw.url),
                        ("ORTHANC_USERNAME", stack.settings.orthanc_username),
                        ("ORTHANC_PASSWORD", stack.settings.orthanc_password)):
        monkeypatch.setenv(name, value)

    code = main(["load", str(path), "--practice", "--yes", "--wait", "--poll", "0.2", "--timeout", "180"])
    out = capsys.readouterr().out

    assert code == exit_codes.OK, out
    lines = out.strip().splitlines()
    assert "(practice run: nothing will be exported)" in out
    assert "[practice]: 3/3 finished (skipped=3)" in lines[-2]  # the summary line of a real run
    assert lines[-1].startswith("practice run: nothing was exported")
    summary = {"project": studies and "test-extract-uclh-omop-cdm", "extract": path_extract(out)}
    ended = jobs(conn, summary)
    assert [j["state"] for j in ended] == ["skipped"] * 3
    assert {j["last_error"] for j in ended} == {PRACTICE_REASON}
    assert all("anonymising" in j["state_times"] and "exported" not in j["state_times"] for j in ended)
    # Nothing at the destination, no de-identified copy in anon, no id-map record kept.
    assert _ftps_files(stack) == at_destination
    assert all(find_study(stack.anon, j["pseudo_study_uid"]) is None for j in ended)
    assert conn.execute("SELECT count(*) FROM deid_id_map").fetchone()[0] == id_map_rows
    # What anon kept is on record for the report.
    kept = conn.execute("SELECT sum(instances) FROM anon_outcomes WHERE job_id = ANY(%s) AND outcome = 'kept'",
                        ([j["id"] for j in ended],)).fetchone()[0]
    assert kept == 6

    # The real run of the same extract replaces the practice run and exports.
    real = upload_csv(stack.settings, path)
    assert (real["queued"], real["practice"]) == (3, False)
    finished = wait_until_ended(conn, real)
    assert [j["state"] for j in finished] == ["exported"] * 3
    assert len(_ftps_files(stack) - at_destination) == 3


def path_extract(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("extract "))


def test_cancel_mid_extract_withdraws_the_queue_and_lets_transfers_in_flight_finish(
    stack, conn, controls, tmp_path
):
    # One token in the bucket and the next in 100 s: exactly one study leaves the queue
    # before the cancel, however fast or slow the machine.
    throttle.update_controls(conn, max_in_flight=1, studies_per_second=0.01, paused=False)
    conn.execute("UPDATE transfer_controls SET tokens = 1, tokens_updated_at = clock_timestamp()")
    studies = archive_studies(stack.settings, tmp_path, 6)
    summary = upload_csv(stack.settings, cohort_csv(studies, tmp_path))
    wait_for_jobs(conn, summary, lambda js: any(j["state"] != "queued" for j in js), "a transfer started")
    before = jobs(conn, summary)
    past_queue = {j["id"] for j in before if j["state"] != "queued"}

    response = requests.post(stack.settings.raw.url + "/pixl/extracts/cancel",
                             json={"project": summary["project"], "extract": summary["extract"]},
                             auth=stack.settings.orthanc_auth, timeout=30)
    assert response.status_code == 200, response.text
    result = response.json()

    assert len(past_queue) == 1
    assert (result["withdrawn"], result["in_flight"] + result["exported"]) == (5, 1)
    ended = wait_until_ended(conn, summary)
    states = {j["id"]: j["state"] for j in ended}
    assert all(states[i] == "exported" for i in past_queue)  # in flight: finished
    withdrawn = [j for j in ended if j["id"] not in past_queue]
    assert all(j["state"] == "skipped" and j["last_error"] == CANCELLED_REASON for j in withdrawn)
    assert all("querying" not in j["state_times"] for j in withdrawn)  # never reached the archive
    # A retry does not bring a cancelled extract's studies back.
    conn.execute("UPDATE study_jobs SET state = 'queued' WHERE id = %s", (withdrawn[0]["id"],))
    assert jobs(conn, summary)[[j["id"] for j in ended].index(withdrawn[0]["id"])]["state"] == "skipped"


def _metrics(url: str, auth) -> dict[str, list]:
    response = requests.get(url + "/pixl/metrics", auth=auth, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def test_metrics_of_raw_and_anon_parse_and_match_the_database(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=3, studies_per_second=40, paused=False)
    studies = archive_studies(stack.settings, tmp_path, 2)
    summary = upload_csv(stack.settings, cohort_csv(studies, tmp_path))
    wait_until_ended(conn, summary)

    for service, url in (("raw", stack.settings.raw.url), ("anon", stack.settings.anon.url)):
        families = _metrics(url, stack.settings.orthanc_auth)
        counts = collections.Counter(dict(conn.execute(
            "SELECT state, count(*) FROM study_jobs WHERE project_slug = %s GROUP BY 1", (summary["project"],))))
        shown = {s.labels["state"]: s.value for s in families["pixl_jobs"]
                 if s.labels["project"] == summary["project"]}
        assert {k: v for k, v in shown.items() if v} == dict(counts), service
        assert families["pixl_transfer_limit_in_flight"][0].value == 3
        assert families["pixl_transfer_limit_studies_per_second"][0].value == 40
        assert "pixl_transfers_in_flight" in families
        cmove = {s.name: s for s in families["pixl_cmove_seconds"]}
        assert cmove["pixl_cmove_seconds_count"].value >= 2
        assert cmove["pixl_cmove_seconds_sum"].value > 0
        exports = {s.name: s for s in families["pixl_export_seconds"]}
        assert exports["pixl_export_seconds_count"].value >= 2
        kept = next(s for s in families["pixl_deid_instances"] if s.labels["outcome"] == "kept")
        assert kept.value >= 4
        assert families["pixl_deid_instances_per_second"][0].value > 0
        assert {s.labels["stage"] for s in families["pixl_job_errors"]} >= {"retrieve", "export"}
        assert families[f"pixl_{service}_storage_bytes"][0].value > 0
    raw = _metrics(stack.settings.raw.url, stack.settings.orthanc_auth)
    assert raw["pixl_raw_storage_limit_bytes"][0].value == stack.settings.raw_max_storage_mb * 1024 * 1024
