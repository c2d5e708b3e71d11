"""Lifecycle hooks against a real PostgreSQL: each study and each extract is announced once,
however many anon servers race, and a raising hook is recorded without changing any job."""

from __future__ import annotations

import threading
import time

import pytest

from orthanc_plugins.anon import lifecycle
from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.hook_events import recent_hook_errors
from orthanc_plugins.common.projects import load_project
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_hooks import plugins
from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import ExportedStudy, ExportReceipt, ExtractSummary


class Recorder:
    """A site's step that remembers what it was told."""

    def __init__(self) -> None:
        self.studies: list[ExportedStudy] = []
        self.receipts: list[ExportReceipt | None] = []
        self.extracts: list[tuple[str, ExtractSummary]] = []

    @hookimpl
    def pixl_study_exported(self, project, study, receipt):
        self.studies.append(study)
        self.receipts.append(receipt)

    @hookimpl
    def pixl_extract_finished(self, project, extract_name, summary):
        self.extracts.append((extract_name, summary))


class Broken:
    @hookimpl
    def pixl_study_exported(self, study):
        raise RuntimeError(f"research database refused {study.pseudo_study_uid}")

    @hookimpl
    def pixl_extract_finished(self, extract_name):
        raise ConnectionError("research database down")


@pytest.fixture
def project():
    return load_project(REPO_ROOT / "projects" / "demo.yaml", REPO_ROOT / "projects",
                        REPO_ROOT / "tag_rules")


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def manager(recorder):
    manager = plugins.make_plugin_manager()
    manager.register(recorder, name="recorder")
    return manager


@pytest.fixture
def conn(pixl_settings):
    with pixl_db.connect(pixl_settings, autocommit=True) as connection:
        yield connection


def _extract(conn, states: list[str], name: str = "2026-11-01t09-00-00") -> tuple[int, list[int]]:
    extract_id = conn.execute(
        "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind)"
        " VALUES ('demo', %s, now(), 'omop') RETURNING id", (name,),
    ).fetchone()[0]
    jobs = [
        conn.execute(
            "INSERT INTO study_jobs (extract_id, project_slug, mrn, state, pseudo_patient_id,"
            " pseudo_study_uid, procedure_occurrence_id) VALUES (%s, 'demo', %s, %s, %s, %s, %s)"
            " RETURNING id",
            (extract_id, f"mrn-{index}", state, f"pseudo-{index}", f"2.25.{index}", 100 + index),
        ).fetchone()[0]
        for index, state in enumerate(states)
    ]
    return extract_id, jobs


class Job:
    def __init__(self, job_id: int) -> None:
        self.id = job_id


def _events(conn, hook: str) -> list[tuple]:
    return conn.execute(
        "SELECT plugin, job_id, outcome FROM hook_events WHERE hook = %s ORDER BY id", (hook,)
    ).fetchall()


def test_each_study_is_announced_once_then_its_extract_once_at_its_last_study(
    conn, project, manager, recorder, secrets
):
    extract_id, (first, second, third) = _extract(conn, ["exported", "exporting", "not_found"])
    receipt = ExportReceipt("ftps", "demo/2.25.0.zip", 3)

    lifecycle.notify_study_exported(conn, project, Job(first), receipt, secrets, manager)
    lifecycle.notify_study_exported(conn, project, Job(first), receipt, secrets, manager)  # again

    assert [s.job_id for s in recorder.studies] == [first]
    assert recorder.studies[0] == ExportedStudy(first, "pseudo-0", "2.25.0", "2026-11-01t09-00-00",
                                                100)
    assert recorder.receipts == [receipt]
    assert recorder.extracts == []  # the second study is still under way

    conn.execute("UPDATE study_jobs SET state = 'exported' WHERE id = %s", (second,))
    lifecycle.notify_study_exported(conn, project, Job(second), None, secrets, manager)

    assert [s.job_id for s in recorder.studies] == [first, second]
    assert recorder.extracts == [("2026-11-01t09-00-00",
                                  ExtractSummary(studies=3, exported=2, not_found=1))]
    assert lifecycle.notify_extract_finished_if_done(conn, extract_id, lambda _: project,
                                                     secrets, manager) is False
    assert lifecycle.notify_pending(conn, lambda _: project, secrets, manager) == 0
    assert len(recorder.extracts) == 1
    assert _events(conn, "pixl_study_exported") == [("recorder", first, "ok"),
                                                    ("recorder", second, "ok")]
    assert _events(conn, "pixl_extract_finished") == [("recorder", None, "ok")]
    assert third not in [s.job_id for s in recorder.studies]  # not_found is not exported


def test_a_raising_hook_is_recorded_and_changes_no_job_nor_the_other_plugins(
    conn, project, manager, recorder, secrets, caplog
):
    manager.register(Broken(), name="broken")
    _, (job_id,) = _extract(conn, ["exported"])

    lifecycle.notify_study_exported(conn, project, Job(job_id), None, secrets, manager)

    assert [s.job_id for s in recorder.studies] == [job_id]  # called although "broken" raised
    assert len(recorder.extracts) == 1
    state, attempts, last_error = conn.execute(
        "SELECT state, attempts, last_error FROM study_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert (state, attempts, last_error) == ("exported", 0, None)
    errors = recent_hook_errors(conn)
    assert [(e["hook"], e["plugin"], e["project"], e["job_id"], e["error"]) for e in errors] == [
        ("pixl_extract_finished", "broken", "demo", None, "ConnectionError: research database down"),
        ("pixl_study_exported", "broken", "demo", job_id,
         "RuntimeError: research database refused 2.25.0"),
    ]
    assert errors[0]["extract"] == "2026-11-01t09-00-00"
    assert "hook pixl_study_exported of plugin broken failed" in caplog.text
    # Not called again: a failing hook is recorded, never retried into a second announcement.
    assert lifecycle.notify_pending(conn, lambda _: project, secrets, manager) == 0
    assert len(recorder.studies) == 1


class Hanging:
    """A site's step that does not return until the test lets it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    @hookimpl
    def pixl_study_exported(self, study):
        self.calls += 1
        self.release.wait(30)  # without a time limit, the test waits this long and then fails


def test_a_hanging_hook_holds_the_worker_only_for_its_time_limit_and_is_not_piled_up(
    conn, project, manager, recorder, secrets, monkeypatch
):
    hanging = Hanging()
    manager.register(hanging, name="hanging")
    monkeypatch.setattr(plugins, "LIFECYCLE_TIME_LIMIT_SECONDS", 0.2)
    _, (first, second) = _extract(conn, ["exported", "exported"])
    try:
        lifecycle.notify_study_exported(conn, project, Job(first), None, secrets, manager)
        lifecycle.notify_study_exported(conn, project, Job(second), None, secrets, manager)

        assert [s.job_id for s in recorder.studies] == [first, second]  # the others went on
        assert hanging.calls == 1  # its second call waits for the first to return
        outcomes = {e["job_id"]: e["error"] for e in recent_hook_errors(conn) if e["plugin"] == "hanging"}
        assert outcomes[first].startswith("did not return within 0.2 s")
        assert outcomes[second].startswith("not called: its previous call has not returned")
    finally:
        hanging.release.set()
    deadline = time.monotonic() + 30
    while plugins._still_running and time.monotonic() < deadline:
        time.sleep(0.05)
    # Once it has returned, the plugin is called again.
    assert plugins.call_lifecycle_hook("pixl_study_exported", manager, project=project,
                                       study=recorder.studies[0], receipt=None, secrets=secrets,
                                       time_limit=10)[0] == plugins.HookCall("hanging", None)


def test_a_broken_project_delays_only_its_own_announcements(conn, project, manager, recorder,
                                                            secrets):
    broken, _ = _extract(conn, ["not_found"], name="of-a-broken-project")
    conn.execute("UPDATE extracts SET project_slug = 'broken' WHERE id = %s", (broken,))
    healthy, _ = _extract(conn, ["failed"], name="of-a-good-project")

    def project_config(slug):
        if slug == "broken":
            raise ValueError("projects/broken.yaml: project.name: missing")
        return project

    assert lifecycle.notify_pending(conn, project_config, secrets, manager) == 1
    assert [name for name, _ in recorder.extracts] == ["of-a-good-project"]
    finished = dict(conn.execute("SELECT id, finished_at IS NOT NULL FROM extracts").fetchall())
    assert finished == {broken: False, healthy: True}  # not claimed: tried again next round


def test_extracts_that_ended_in_raw_and_studies_left_unannounced_are_found_by_the_sweep(
    conn, project, manager, recorder, secrets
):
    finished, (exported, _) = _extract(conn, ["exported", "not_found"], name="ended-in-raw")
    running, _ = _extract(conn, ["retrieving"], name="still-running")

    # Just exported: left to the server that exported it, which has the receipt.
    assert lifecycle.notify_pending(conn, lambda _: project, secrets, manager) == 0
    assert recorder.studies == [] and recorder.extracts == []

    # Exported an hour ago and never announced (its server died before the call).
    conn.execute("UPDATE study_jobs SET state_times = jsonb_build_object('exported',"
                 " now() - interval '1 hour') WHERE id = %s", (exported,))
    assert lifecycle.notify_pending(conn, lambda _: project, secrets, manager) == 2

    assert [(s.job_id, r) for s, r in zip(recorder.studies, recorder.receipts)] == [(exported, None)]
    assert recorder.extracts == [("ended-in-raw", ExtractSummary(2, exported=1, not_found=1))]
    finished_at = dict(conn.execute("SELECT id, finished_at FROM extracts").fetchall())
    assert finished_at[finished] is not None and finished_at[running] is None
    assert lifecycle.notify_pending(conn, lambda _: project, secrets, manager) == 0


def test_two_anon_servers_seeing_the_last_study_end_announce_the_extract_once(
    pixl_settings, conn, project, manager, recorder, secrets
):
    extract_id, _ = _extract(conn, ["exported", "failed"])
    conn.execute("UPDATE study_jobs SET exported_notified_at = now()")
    answers: dict[str, bool] = {}
    # Server A claims the extract in a transaction it has not committed yet...
    with pixl_db.connect(pixl_settings) as first:
        answers["a"] = lifecycle.notify_extract_finished_if_done(
            first, extract_id, lambda _: project, secrets, manager)
        second_pid: list[int] = []

        def server_b() -> None:
            with pixl_db.connect(pixl_settings, autocommit=True) as second:
                second_pid.append(second.info.backend_pid)
                answers["b"] = lifecycle.notify_extract_finished_if_done(
                    second, extract_id, lambda _: project, secrets, manager)

        thread = threading.Thread(target=server_b)
        thread.start()
        # ...while server B's claim waits for A's row lock: the race, forced.
        deadline = time.monotonic() + 60
        while not _waiting_for_a_lock(conn, second_pid):
            assert time.monotonic() < deadline, "server B never reached the extract's row lock"
            time.sleep(0.05)
        first.commit()
    thread.join(timeout=60)

    assert answers == {"a": True, "b": False}
    assert recorder.extracts == [("2026-11-01t09-00-00", ExtractSummary(2, exported=1, failed=1))]


def _waiting_for_a_lock(conn, pids: list[int]) -> bool:
    if not pids:
        return False
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                       (pids[0],)).fetchone()
    return row is not None and row[0] == "Lock"


def test_the_listing_shows_which_plugin_implements_which_hook(manager):
    listing = {entry["name"]: entry for entry in plugins.list_plugins(manager)}

    assert listing["recorder"]["hooks"] == ["pixl_extract_finished", "pixl_study_exported"]
    assert listing["recorder"]["destinations"] == []
    assert listing["pixl_hooks.destinations.sftp"]["destinations"] == ["sftp"]
    assert listing["pixl_hooks.destinations.ftps"]["destinations"] == ["ftpes", "ftps"]
    assert "pixl_study_exported" not in listing["pixl_hooks.destinations.ftps"]["hooks"]
