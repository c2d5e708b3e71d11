"""The native stack: servers, health, migrations, query/retrieve, lifecycle."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pytest
import requests

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.orthanc_api import get_json, post_json
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.processes import pid_alive, port_open
from pixl_stack.stack import Stack

pytestmark = pytest.mark.stack


def test_every_server_answers_and_requires_authentication(stack):
    nodes = [stack.settings.vna, stack.settings.raw, stack.settings.anon,
             stack.settings.dicomweb_destination]
    for node in nodes:
        # raw and anon: PIXL's request filter refuses (403); the development servers: Orthanc's own 401.
        refused = 403 if node.name in ("raw", "anon") else 401
        assert requests.get(node.url + "/system", timeout=5).status_code == refused, node.name
        system = requests.get(node.url + "/system", auth=stack.settings.orthanc_auth, timeout=5)
        assert system.status_code == 200, node.name
        assert system.json()["DicomAet"] == node.aet


def test_both_plugins_report_healthy_with_the_current_schema(stack):
    latest = max(version for version, _, _ in pixl_db.available_migrations())
    for client, service in ((stack.raw, "raw"), (stack.anon, "anon")):
        health = get_json(client, "/pixl/health")
        assert health["service"] == service
        assert health["healthy"] is True
        assert health["database"] == "ok"
        assert health["schema_version"] == latest
        assert health["version"] == "0.1.0"


def test_up_on_a_running_stack_changes_nothing(stack):
    before = {s.name: s.pid for s in stack.stack.status()}
    stack.stack.up()
    after = {s.name: s.pid for s in stack.stack.status()}
    assert before == after
    assert all(s.state == "running" for s in stack.stack.status())


def test_raw_finds_and_moves_a_study_stored_into_the_vna(stack, tmp_path):
    patient = studygen.make_patient(4242)
    datasets = studygen.generate_study(studygen.StudySpec(modality="CT", series=2, instances_per_series=3, seed=4242), patient)
    files = studygen.write_study(datasets, tmp_path)
    storescu(files, stack.settings.vna)
    study_uid = str(datasets[0].StudyInstanceUID)

    query = post_json(stack.raw, "/modalities/vna/query",
                      {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
    answers = get_json(stack.raw, f"/queries/{query['ID']}/answers?expand")
    assert len(answers) == 1

    job = post_json(stack.raw, f"/queries/{query['ID']}/retrieve",
                    {"TargetAet": stack.settings.raw.aet, "Asynchronous": True})
    deadline = time.monotonic() + 60
    while get_json(stack.raw, f"/jobs/{job['ID']}")["State"] != "Success":
        assert time.monotonic() < deadline, "C-MOVE did not finish"
        time.sleep(0.2)
    found = post_json(stack.raw, "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}})
    assert len(found) == len(files)


def test_raw_refuses_c_store_from_an_unknown_archive(stack, tmp_path):
    datasets = studygen.generate_study(studygen.StudySpec(series=1, instances_per_series=1, seed=7), studygen.make_patient(7))
    files = studygen.write_study(datasets, tmp_path)
    with pytest.raises(RuntimeError, match="storescu into raw failed"):
        storescu(files, stack.settings.raw, calling_aet="INTRUDER")


def test_migrations_are_idempotent_and_safe_when_two_plugins_start_together(postgres, base_settings):
    fresh = dataclasses.replace(base_settings, pg_database="pixl_migration_race")
    postgres.ensure_role_and_database(fresh.pg_user, fresh.pg_password, fresh.pg_database)
    versions, errors = [], []

    def start_plugin():
        try:
            with pixl_db.connect(fresh) as conn:
                versions.append(pixl_db.migrate(conn))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start_plugin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    latest = max(version for version, _, _ in pixl_db.available_migrations())
    assert versions == [latest] * 4
    with pixl_db.connect(fresh) as conn:
        applied = conn.execute("SELECT count(*) FROM pixl_schema_migrations").fetchone()[0]
        assert applied == len(pixl_db.available_migrations())
        assert pixl_db.migrate(conn) == latest


def test_status_reports_a_crash_and_down_leaves_nothing_behind(base_settings, extra_stack_settings):
    # Under the session's state dir: PostgreSQL (user 'postgres') must traverse it.
    state = base_settings.state_dir / "lifecycle"
    settings = extra_stack_settings(base_settings, 1, state)
    stack = Stack(settings)
    try:
        stack.up()
        statuses = {s.name: s for s in stack.status()}
        assert all(s.state == "running" for s in statuses.values())
        os.kill(statuses["vna"].pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while {s.name: s.state for s in stack.status()}["vna"] != "crashed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pids = [s.pid for s in stack.status() if s.pid]
    finally:
        stack.down()
    assert not any(pid_alive(pid) for pid in pids)
    ports = [settings.pg_port] + [p for n in (settings.raw, settings.anon, settings.vna, settings.dicomweb_destination)
                                  for p in (n.http_port, n.dicom_port)]
    assert not any(port_open(port) for port in ports)
    assert all(s.state == "stopped" for s in stack.status())


def test_the_web_ui_of_raw_and_anon_shows_the_pixl_panel(stack):
    for node in (stack.settings.raw, stack.settings.anon):
        explorer = requests.get(node.url + "/app/explorer.html", auth=stack.settings.orthanc_auth, timeout=5)
        assert explorer.status_code == 200
        extension = requests.get(node.url + "/plugins/explorer.js", auth=stack.settings.orthanc_auth, timeout=5)
        assert "pixl-panel" in extension.text
        assert "../pixl/health" in extension.text
