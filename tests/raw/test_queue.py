"""The work queue and the shared throttle against a real PostgreSQL."""

from __future__ import annotations

import datetime
import threading
import time

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.job_queue import RetryPolicy
from orthanc_plugins.raw import queue, throttle
from orthanc_plugins.raw.extracts import ExtractRow, ParsedExtract, extract_name_for, queue_extract


def _load(conn, settings, n: int) -> None:
    generated = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    rows = [ExtractRow(f"mrn{i}", f"acc{i}", f"1.2.{i}", (), None, i) for i in range(n)]
    queue_extract(conn, settings, ParsedExtract(
        "test-extract-uclh-omop-cdm", extract_name_for(generated), generated, "csv", rows,
    ))


def test_claims_in_order_and_records_state_times(conn, pixl_settings):
    _load(conn, pixl_settings, 3)
    first = queue.claim_next_job(conn, "a", 30)
    second = queue.claim_next_job(conn, "a", 30)

    assert (first.id, second.id) == (1, 2)
    assert (first.state, first.attempts) == ("querying", 0)  # attempts count failures only
    assert "mrn" not in repr(first) and "acc0" not in repr(first)
    times = conn.execute("SELECT state_times FROM study_jobs WHERE id = 1").fetchone()[0]
    assert set(times) == {"queued", "querying"}


def test_two_claimers_never_take_the_same_job(pixl_settings, conn):
    _load(conn, pixl_settings, 400)
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def claim_all(owner: str) -> None:
        with pixl_db.connect(pixl_settings, autocommit=True) as own:
            while (job := queue.claim_next_job(own, owner, 30)) is not None:
                taken[owner].append(job.id)

    threads = [threading.Thread(target=claim_all, args=(o,)) for o in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert taken["a"] and taken["b"]  # both really worked
    assert sorted(taken["a"] + taken["b"]) == list(range(1, 401))


def test_a_job_of_a_dead_holder_is_taken_back_after_its_lease(conn, pixl_settings):
    _load(conn, pixl_settings, 1)
    held = queue.claim_next_job(conn, "dead", 0.5)
    assert queue.claim_next_job(conn, "alive", 30) is None  # lease still running
    time.sleep(0.6)
    taken = queue.claim_next_job(conn, "alive", 30)

    assert taken.id == held.id
    # The dead holder, should it wake up, can no longer move the job.
    assert not queue.move_job(conn, held.id, "dead", "cached")
    assert queue.move_job(conn, held.id, "alive", "cached")


def test_retry_backs_off_then_fails_after_max_attempts(conn, pixl_settings):
    _load(conn, pixl_settings, 1)
    job = queue.claim_next_job(conn, "w", 30)
    policy = RetryPolicy(base_seconds=60, cap_seconds=600, max_attempts=2, give_up_seconds=3600)
    state = queue.schedule_retry(conn, job.id, "w", "C-FIND failed", policy, state="queued")
    assert state == "queued"
    assert queue.claim_next_job(conn, "w", 30) is None  # not due for 60 s
    conn.execute("UPDATE study_jobs SET next_attempt_at = now()")
    job = queue.claim_next_job(conn, "w", 30)
    state = queue.schedule_retry(conn, job.id, "w", "C-FIND failed", policy, state="queued")

    assert state == "failed"
    row = conn.execute("SELECT state, last_error, lease_owner FROM study_jobs").fetchone()
    assert row == ("failed", "C-FIND failed (gave up after 2 attempts)", None)
    assert queue.retry_failed_jobs(conn, project="test-extract-uclh-omop-cdm") == 1
    assert queue.claim_next_job(conn, "w", 30).attempts == 0


def test_backoff_is_exponential_and_capped():
    assert [queue.backoff_seconds(a, 5, 30) for a in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]


def test_in_flight_limit_holds_across_claimers(conn, pixl_settings):
    _load(conn, pixl_settings, 10)
    throttle.update_controls(conn, max_in_flight=3, studies_per_second=1000)
    claimed = [throttle.claim_transfer_job(conn, f"w{i}", 30)[0] for i in range(5)]

    assert sum(job is not None for job in claimed) == 3
    assert throttle.read_controls(conn).in_flight == 3
    queue.move_job(conn, claimed[0].id, "w0", "cached")  # one transfer ends: one slot frees
    assert throttle.claim_transfer_job(conn, "w9", 30)[0] is not None
    assert throttle.claim_transfer_job(conn, "w9", 30)[0] is None


def test_rate_limits_claims_and_changes_while_running(conn, pixl_settings):
    _load(conn, pixl_settings, 50)
    throttle.update_controls(conn, max_in_flight=100, studies_per_second=2)
    conn.execute("UPDATE transfer_controls SET tokens = 0, tokens_updated_at = clock_timestamp()")

    def claims_in(seconds: float) -> int:
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            job, wait = throttle.claim_transfer_job(conn, "w", 30)
            count += job is not None
            time.sleep(min(wait, 0.02))
        return count

    slow = claims_in(1.0)
    throttle.update_controls(conn, studies_per_second=20)
    fast = claims_in(1.0)
    assert slow <= 3
    assert fast >= 12


def test_pause_stops_claims_and_resume_restarts_them(conn, pixl_settings):
    _load(conn, pixl_settings, 2)
    throttle.update_controls(conn, paused=True)
    assert throttle.claim_transfer_job(conn, "w", 30)[0] is None
    controls = throttle.update_controls(conn, paused=False)
    assert controls.paused is False
    assert throttle.claim_transfer_job(conn, "w", 30)[0] is not None
