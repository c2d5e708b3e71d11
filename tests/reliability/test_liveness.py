"""Workers that outlive their database, and health that tells dead or stuck workers."""

from __future__ import annotations

import dataclasses
import threading
import time

import psycopg

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.liveness import WorkerBeats
from orthanc_plugins.common.plugin_support import health
from orthanc_plugins.raw.worker import Worker


class NoOrthanc:
    """raw's Orthanc, never called while no job is queued."""

    def get(self, uri):  # pragma: no cover - called only if a job were claimed
        raise AssertionError(uri)

    post = put = delete = get


def test_raw_workers_started_while_the_database_is_down_work_once_it_is_up(pixl_settings):
    database_up = threading.Event()
    refused = []

    def connect():
        if not database_up.is_set():
            refused.append(1)
            raise psycopg.OperationalError("connection refused")
        return pixl_db.connect(pixl_settings, autocommit=True)

    worker = Worker(pixl_settings, NoOrthanc(), threads=2, connect=connect, max_wait=0.1)
    worker.start()
    try:
        time.sleep(0.5)
        assert refused and worker.beats.report()["alive"] == 2  # still there, trying
        database_up.set()
        with pixl_db.connect(pixl_settings, autocommit=True) as conn:
            deadline = time.monotonic() + 20
            while conn.execute("SELECT count(*) FROM transfer_controls").fetchone()[0] == 0:
                assert time.monotonic() < deadline, "the workers never reached the database"
                time.sleep(0.1)
            while conn.execute("SELECT count(*) FROM pixl_processes WHERE owner_prefix = %s",
                               (worker.owner_prefix,)).fetchone()[0] == 0:
                assert time.monotonic() < deadline, "the process never said it was alive"
                time.sleep(0.1)
        assert worker.beats.report()["healthy"]
    finally:
        worker.stop()
    with pixl_db.connect(pixl_settings, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pixl_processes WHERE owner_prefix = %s",
                            (worker.owner_prefix,)).fetchone()[0] == 0  # a clean stop says goodbye


def test_health_reports_dead_and_stuck_workers(pixl_settings):
    beats = WorkerBeats(stuck_after_seconds=0.2)
    dead = threading.Thread(target=lambda: None, name="dead-worker")
    dead.start()
    dead.join()
    stop = threading.Event()
    stuck = threading.Thread(target=stop.wait, name="stuck-worker", daemon=True)
    stuck.start()
    beats.register("dead-worker", dead)
    beats.register("stuck-worker", stuck)
    try:
        time.sleep(0.3)
        answer = health(pixl_settings, "raw", workers=beats.report())
    finally:
        stop.set()
    assert answer["database"] == "ok"
    assert not answer["healthy"]
    assert answer["workers"]["dead"] == ["dead-worker"]
    assert answer["workers"]["stuck"] == ["stuck-worker"]
    assert any("died" in p for p in answer["problems"]) and any("stuck" in p for p in answer["problems"])


def test_health_reports_a_nearly_full_disk(pixl_settings):
    settings = dataclasses.replace(pixl_settings, min_free_disk_mb=10**9)  # a petabyte
    pixl_settings.state_dir.mkdir(parents=True, exist_ok=True)
    answer = health(settings, "anon")
    assert not answer["healthy"]
    assert any(p.startswith("disk nearly full") for p in answer["problems"])
