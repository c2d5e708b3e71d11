"""The queue's rules for failures, against a real PostgreSQL: outages count nothing and
fail only after the give-up time, study faults are counted per stage, a study that takes
its worker processes down is set aside, and a lease is kept while a long step runs."""

from __future__ import annotations

import errno
import ssl
import time

import psycopg
import pytest
import requests

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.failures import classify
from orthanc_plugins.common.job_queue import RetryPolicy, claim_job, move_job, schedule_retry
from orthanc_plugins.common.leases import LeaseKeeper, LeaseLost
from orthanc_plugins.common.orthanc_api import OrthancError
from orthanc_plugins.raw import queue
from orthanc_plugins.raw.handoff import HandoffError
from orthanc_plugins.raw.retrieve import RetrieveError
from pixl_hooks.types import DestinationRejected, DestinationUnavailable

POLICY = RetryPolicy(base_seconds=0.01, cap_seconds=0.01, max_attempts=3, give_up_seconds=1.0)


def _one_job(conn) -> int:
    extract_id = conn.execute(
        "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind)"
        " VALUES ('p', %s, now(), 'csv') RETURNING id", (f"e-{time.time_ns()}",),
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO study_jobs (extract_id, project_slug, mrn) VALUES (%s, 'p', 'm') RETURNING id",
        (extract_id,),
    ).fetchone()[0]


def _row(conn, job_id: int) -> dict:
    cur = conn.execute("SELECT state, attempts, retries, crashes, outage_since, last_error"
                       " FROM study_jobs WHERE id = %s", (job_id,))
    return dict(zip([c.name for c in cur.description], cur.fetchone()))


def _claim(conn, owner: str = "w/0", lease: float = 30, **kwargs):
    time.sleep(0.02)  # past the last backoff
    return queue.claim_next_job(conn, owner, lease, **kwargs)


@pytest.fixture
def conn(pixl_settings):
    with pixl_db.connect(pixl_settings, autocommit=True) as connection:
        yield connection


def test_an_outage_counts_no_attempt_and_fails_only_after_the_give_up_time(conn):
    job_id = _one_job(conn)
    for _ in range(10):  # far more than max_attempts
        job = _claim(conn)
        assert schedule_retry(conn, job.id, "w/0", "C-FIND on vna failed", POLICY,
                              state="queued", outage=True) == "queued"
    row = _row(conn, job_id)
    assert (row["state"], row["attempts"], row["retries"]) == ("queued", 0, 10)
    assert row["outage_since"] is not None

    time.sleep(POLICY.give_up_seconds)
    job = _claim(conn)
    assert schedule_retry(conn, job.id, "w/0", "C-FIND on vna failed", POLICY,
                          state="queued", outage=True) == "failed"
    assert _row(conn, job_id)["last_error"].startswith("C-FIND on vna failed (gave up: unavailable for")


def test_faults_of_the_study_are_counted_per_stage(conn):
    job_id = _one_job(conn)
    for _ in range(POLICY.max_attempts - 1):
        job = _claim(conn)
        assert schedule_retry(conn, job.id, "w/0", "short transfer", POLICY, state="queued") == "queued"
    assert _row(conn, job_id)["attempts"] == POLICY.max_attempts - 1

    # The transfer then succeeds: the hand-off stage starts with a clean count.
    job = _claim(conn)
    assert move_job(conn, job.id, "w/0", "cached", lease_seconds=30)
    assert move_job(conn, job.id, "w/0", "anonymising")
    assert (_row(conn, job_id)["attempts"], _row(conn, job_id)["retries"]) == (0, 0)

    for expected in ("anonymising", "anonymising", "failed"):
        time.sleep(0.02)
        job = claim_job(conn, ("anonymising",), "anonymising", "w/0", 30, queue.StudyJob)
        assert schedule_retry(conn, job.id, "w/0", "bad pixel data", POLICY, state="anonymising") == expected
    assert _row(conn, job_id)["last_error"] == "bad pixel data (gave up after 3 attempts)"


def test_a_worker_that_lost_its_lease_cannot_schedule_a_retry(conn):
    _one_job(conn)
    job = _claim(conn, owner="slow/0", lease=0.05)
    time.sleep(0.1)
    taken = _claim(conn, owner="fast/0")
    assert taken.id == job.id
    assert schedule_retry(conn, job.id, "slow/0", "late", POLICY, state="queued") is None
    assert _row(conn, job.id)["state"] == "querying"


def test_a_study_that_took_its_worker_down_twice_is_set_aside(conn):
    job_id = _one_job(conn)
    # A live process holds it: its lease running out is not a crash.
    conn.execute("INSERT INTO pixl_processes (owner_prefix, service, node) VALUES ('alive', 'raw', 'x')")
    _claim(conn, owner="alive/0", lease=0.05)
    time.sleep(0.1)
    _claim(conn, owner="ghost-1/0", lease=0.05, max_crashes=2)
    assert _row(conn, job_id)["crashes"] == 0

    # A process that is not seen any more died with it, twice.
    time.sleep(0.1)
    _claim_dead_after_zero = lambda owner: claim_job(  # noqa: E731
        conn, ("querying",), "querying", owner, 0.05, queue.StudyJob, dead_after_seconds=0)
    assert _claim_dead_after_zero("ghost-2/0") is not None
    assert _row(conn, job_id)["crashes"] == 1
    time.sleep(0.1)
    assert _claim_dead_after_zero("ghost-3/0") is None  # set aside, not handed to a third victim
    row = _row(conn, job_id)
    assert (row["state"], row["crashes"]) == ("failed", 2)
    assert row["last_error"].startswith("set aside: the study was being processed when 2 worker")


def test_the_lease_keeper_keeps_a_long_step_held_and_notices_when_it_is_taken(conn, pixl_settings):
    _one_job(conn)
    job = _claim(conn, owner="keeper/0", lease=0.6)
    connect = lambda: pixl_db.connect(pixl_settings, autocommit=True)  # noqa: E731
    with LeaseKeeper(connect, job.id, "keeper/0", 0.6) as keeper:
        time.sleep(2.0)  # more than three leases
        assert _claim(conn, owner="thief/0") is None
        keeper.check()
        # Taken by force (as if the keeper's process had been frozen for a lease):
        conn.execute("UPDATE study_jobs SET lease_owner = 'thief/0' WHERE id = %s", (job.id,))
        deadline = time.monotonic() + 10
        while not keeper.lost:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(LeaseLost):
            keeper.check()


def test_retries_wait_on_the_database_clock(conn):
    job_id = _one_job(conn)
    job = _claim(conn)
    policy = RetryPolicy(base_seconds=3600, cap_seconds=3600, max_attempts=3, give_up_seconds=3600)
    schedule_retry(conn, job.id, "w/0", "x", policy, state="queued", outage=True)
    due_in = conn.execute("SELECT extract(epoch FROM next_attempt_at - clock_timestamp())"
                          " FROM study_jobs WHERE id = %s", (job_id,)).fetchone()[0]
    assert 3590 < float(due_in) <= 3600


@pytest.mark.parametrize(("exc", "outage", "terminal"), [
    (DestinationUnavailable("FTPS down"), True, False),
    (DestinationRejected("refused"), False, True),
    (OrthancError("GET /x answered HTTP 503", status=503), True, False),
    (OrthancError("GET /x answered HTTP 404", status=404), False, False),
    (OrthancError("GET /x failed: ConnectionError", unreachable=True), True, False),
    (OSError(errno.ENOSPC, "No space left on device"), True, False),
    (ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), True, False),
    (requests.ConnectionError("refused"), True, False),
    (psycopg.OperationalError("server closed the connection"), True, False),
    (type("RetryError", (Exception,), {})("after 3 tries"), True, False),
    (RetrieveError("raw holds 3 of 10 instances"), False, False),
    (RetrieveError("C-FIND on vna failed", outage=True), True, False),
    (HandoffError("hand-off to anon answered HTTP 422", outage=False), False, False),
    (ValueError("Smith^John is not a valid date"), False, False),
])
def test_every_exception_becomes_a_reason_that_names_no_patient(exc, outage, terminal):
    failure = classify(exc)
    assert (failure.outage, failure.terminal) == (outage, terminal)
    assert failure.reason
    assert "Smith" not in failure.reason  # another library's message is never quoted


def test_system_errors_are_named_by_their_code():
    assert classify(OSError(errno.ENOSPC, "disk full at /data/Smith")).reason == "OSError ENOSPC"


def test_a_failure_of_the_renewal_thread_does_not_block_the_step(conn, pixl_settings):
    """The keeper's own database trouble shorter than a lease loses nothing."""
    _one_job(conn)
    job = _claim(conn, owner="k/0", lease=30)
    attempts = []

    def flaky_connect():
        attempts.append(1)
        if len(attempts) == 1:
            raise psycopg.OperationalError("database restarting")
        return pixl_db.connect(pixl_settings, autocommit=True)

    with LeaseKeeper(flaky_connect, job.id, "k/0", 0.9) as keeper:
        time.sleep(1.5)
        keeper.check()
    assert len(attempts) >= 2
