"""anon's pipeline against the real stack: de-identify, store, record, dispatch, retry."""

from __future__ import annotations

import dataclasses
import datetime
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import pydicom
import pytest

from orthanc_plugins.anon import copies
from orthanc_plugins.anon.pipeline import StudyAnonymiser
from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.orthanc_api import find_study, post_json
from orthanc_plugins.common.secrets import FileSecrets, destination_secret_name, project_key
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.ftps_server import read_upload_log
from pixl_stack.stack import Stack, settings_environment

pytestmark = pytest.mark.stack

# Our demo project (FTPS; its secrets are named by its slug). PIXL's fixture projects keep
# StudyDescription, where generated studies put the patient's name: the leak guard
# (rightly) quarantines those.
PROJECT = "demo"
ALIAS = "demo"


@pytest.fixture
def demo_settings(pixl_settings):
    # A long backoff, so that "not due again yet" holds however slow the machine.
    return dataclasses.replace(pixl_settings, projects_dir=REPO_ROOT / "projects",
                               tag_rules_dir=REPO_ROOT / "tag_rules", retry_base_seconds=60)


def _anonymiser(settings, secrets, owner: str) -> StudyAnonymiser:
    return StudyAnonymiser(settings, secrets, owner, lambda: pixl_db.connect(settings, autocommit=True))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _configure_ftps(secrets, stack_settings, port: int) -> None:
    values = Stack(stack_settings).development_destination_settings()["ftp"] | {"port": str(port)}
    for name, value in values.items():
        secrets.set(destination_secret_name(ALIAS, "ftp", name), value)


def _study_in_raw(stack, tmp_path, seed: int):
    """A generated DX study stored into raw as the VNA would (C-STORE from the VNA's AE)."""
    patient = studygen.make_patient(seed)
    spec = studygen.StudySpec(modality="DX", series=2, instances_per_series=2, seed=seed,
                              manufacturer="Carestream")
    datasets = studygen.generate_study(spec, patient)
    storescu(studygen.write_study(datasets, tmp_path / f"study-{seed}"), stack.settings.raw,
             calling_aet=stack.settings.vna.aet)
    raw_study_id = find_study(stack.raw, str(datasets[0].StudyInstanceUID))
    assert raw_study_id is not None
    return patient, datasets, raw_study_id


def _insert_job(conn, raw_url: str, raw_study_id: str, datasets) -> int:
    first = datasets[0]
    extract_id = conn.execute(
        "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind)"
        " VALUES (%s, %s, now(), 'csv') RETURNING id", (PROJECT, f"anon-test-{time.time_ns()}"),
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO study_jobs (extract_id, project_slug, mrn, accession_number, study_uid,"
        " state, raw_node, raw_study_id) VALUES (%s, %s, %s, %s, %s, 'anonymising', %s, %s)"
        " RETURNING id",
        (extract_id, PROJECT, str(first.PatientID), str(first.AccessionNumber),
         str(first.StudyInstanceUID), raw_url, raw_study_id),
    ).fetchone()[0]


def _job(conn, job_id: int) -> dict:
    row = conn.execute(
        "SELECT state, attempts, last_error, next_attempt_at, pseudo_study_uid, pseudo_patient_id"
        " FROM study_jobs WHERE id = %s", (job_id,),
    ).fetchone()
    return dict(zip(("state", "attempts", "last_error", "next_attempt_at", "pseudo_study_uid",
                     "pseudo_patient_id"), row))


def test_a_study_is_retried_while_its_destination_is_down_then_exported(stack, demo_settings, tmp_path):
    pixl_settings = demo_settings
    patient, datasets, raw_study_id = _study_in_raw(stack, tmp_path, seed=9001)
    secrets = FileSecrets(pixl_settings.secrets_file)
    _configure_ftps(secrets, stack.settings, _closed_port())
    anonymiser = _anonymiser(pixl_settings, secrets, "test-anon")
    with pixl_db.connect(pixl_settings, autocommit=True) as conn:
        job_id = _insert_job(conn, stack.settings.raw.url, raw_study_id, datasets)

        assert anonymiser.run_once(conn)  # de-identifies and stores in anon
        job = _job(conn, job_id)
        assert job["state"] == "exporting"
        assert job["pseudo_study_uid"].startswith("2.25.")
        assert job["pseudo_patient_id"] != patient.mrn

        assert anonymiser.run_once(conn)  # the FTPS server is down
        job = _job(conn, job_id)
        assert job["state"] == "exporting"
        assert job["next_attempt_at"] > datetime.datetime.now(datetime.UTC)
        assert "ftp" in job["last_error"].lower()
        assert patient.mrn not in job["last_error"]
        assert not anonymiser.run_once(conn)  # not due again before its backoff

        _configure_ftps(secrets, stack.settings, stack.settings.ftps_port)
        conn.execute("UPDATE study_jobs SET next_attempt_at = now() WHERE id = %s", (job_id,))
        assert anonymiser.run_once(conn)
        job = _job(conn, job_id)
        assert job["state"] == "exported"
        assert job["last_error"] is None

        id_map = dict(conn.execute(
            "SELECT kind, count(*) FROM deid_id_map WHERE project_slug = %s GROUP BY kind",
            (PROJECT,),
        ).fetchall())
        assert id_map["sop_instance_uid"] >= len(datasets)
        assert id_map["study_uid"] >= 1
        outcomes = conn.execute(
            "SELECT outcome, instances FROM anon_outcomes WHERE job_id = %s", (job_id,)
        ).fetchall()
        assert outcomes == [("kept", len(datasets))]

    archive = Stack(stack.settings).ftps_root / PROJECT / f"{job['pseudo_study_uid']}.zip"
    with zipfile.ZipFile(archive) as study_zip:
        names = [n for n in study_zip.namelist() if not n.endswith("/")]
        assert len(names) == len(datasets)
        for name in names:
            ds = pydicom.dcmread(io.BytesIO(study_zip.read(name)))
            assert ds.StudyInstanceUID == job["pseudo_study_uid"]
            assert ds.PatientID == job["pseudo_patient_id"]
            assert "PatientName" not in ds or str(ds.PatientName) != str(datasets[0].PatientName)


def test_the_same_study_gets_the_same_pseudonyms_from_any_worker(stack, demo_settings, tmp_path):
    pixl_settings = demo_settings
    _, datasets, raw_study_id = _study_in_raw(stack, tmp_path, seed=9002)
    secrets = FileSecrets(pixl_settings.secrets_file)
    project_key(secrets, PROJECT)
    with pixl_db.connect(pixl_settings, autocommit=True) as conn:
        first = _insert_job(conn, stack.settings.raw.url, raw_study_id, datasets)
        second = _insert_job(conn, stack.settings.raw.url, raw_study_id, datasets)
        # Two anon workers, each with fresh state, each de-identifying one of the jobs.
        assert _anonymiser(pixl_settings, secrets, "worker-a").run_once(conn)
        conn.execute("UPDATE study_jobs SET next_attempt_at = now() + interval '1 day' WHERE id = %s", (first,))
        assert _anonymiser(pixl_settings, secrets, "worker-b").run_once(conn)
        a, b = _job(conn, first), _job(conn, second)
    assert a["state"] == b["state"] == "exporting"
    assert a["pseudo_study_uid"] == b["pseudo_study_uid"]
    assert a["pseudo_patient_id"] == b["pseudo_patient_id"]


def test_a_hand_off_of_an_exported_study_does_nothing_and_says_so(stack):
    project = "test-extract-uclh-omop-cdm"  # a project of the session stack's projects folder
    with pixl_db.connect(stack.settings, autocommit=True) as conn:
        extract_id = conn.execute(
            "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind)"
            " VALUES (%s, %s, now(), 'csv') RETURNING id", (project, f"handoff-{time.time_ns()}"),
        ).fetchone()[0]
        job_id = conn.execute(
            "INSERT INTO study_jobs (extract_id, project_slug, mrn, state) VALUES (%s, %s, 'x', 'exported')"
            " RETURNING id", (extract_id, project),
        ).fetchone()[0]
    answer = post_json(stack.anon, "/pixl/studies", {"job_id": job_id, "project": project,
                                                      "raw_study_id": "x", "raw_url": "x"})
    assert answer == {"accepted": False, "job_id": job_id, "reason": "already exported; nothing to do"}


_KILLED_AT_EXPORTED = """
import os, signal, sys
from orthanc_plugins.anon import pipeline
from orthanc_plugins.common import db
from orthanc_plugins.common.secrets import open_secret_store
from orthanc_plugins.common.settings import load_settings

settings = load_settings()
move_job = pipeline.move_job

def move_then_die_at_exported(conn, job_id, owner, state, **columns):
    if state == "exported":  # the destination has confirmed; the database is not told
        os.kill(os.getpid(), signal.SIGKILL)
    return move_job(conn, job_id, owner, state, **columns)

pipeline.move_job = move_then_die_at_exported
anonymiser = pipeline.StudyAnonymiser(settings, open_secret_store(settings), "doomed/0",
                                      lambda: db.connect(settings, autocommit=True))
with db.connect(settings, autocommit=True) as conn:
    while anonymiser.run_once(conn):
        pass
sys.exit(3)  # never reached the move to 'exported'
"""


def test_anon_killed_between_the_confirmation_and_exported_sends_again_as_a_success(
        stack, demo_settings, tmp_path):
    settings = dataclasses.replace(demo_settings, retry_base_seconds=0.5)
    _, datasets, raw_study_id = _study_in_raw(stack, tmp_path, seed=9003)
    secrets = FileSecrets(settings.secrets_file)
    _configure_ftps(secrets, stack.settings, stack.settings.ftps_port)
    with pixl_db.connect(settings, autocommit=True) as conn:
        job_id = _insert_job(conn, stack.settings.raw.url, raw_study_id, datasets)
        child = subprocess.run([sys.executable, "-c", _KILLED_AT_EXPORTED],
                               env=os.environ | settings_environment(settings), timeout=300)
        assert child.returncode == -signal.SIGKILL
        job = _job(conn, job_id)
        assert job["state"] == "exporting"  # confirmed at the destination, not in the database
        uid = job["pseudo_study_uid"]
        time.sleep(settings.job_lease_seconds + 0.5)  # the dead worker's lease runs out

        assert _anonymiser(settings, secrets, "survivor/0").run_once(conn)
        job = _job(conn, job_id)
    assert job["state"] == "exported" and job["last_error"] is None
    received = [r for r in read_upload_log(Stack(stack.settings).ftps_upload_log)
                if r.event == "received" and r.path.endswith(f"/{uid}.zip.part")]
    assert len(received) == 2  # sent again: the destination took it as the same study
    archive = Stack(stack.settings).ftps_root / PROJECT / f"{uid}.zip"
    with zipfile.ZipFile(archive) as study_zip:
        assert len([n for n in study_zip.namelist() if n.endswith(".dcm")]) == len(datasets)


def test_anons_copies_for_the_web_ui_are_deleted_after_their_retention(stack, demo_settings, tmp_path):
    _, datasets, raw_study_id = _study_in_raw(stack, tmp_path, seed=9004)
    secrets = FileSecrets(demo_settings.secrets_file)
    _configure_ftps(secrets, stack.settings, stack.settings.ftps_port)
    anonymiser = _anonymiser(demo_settings, secrets, "keeper/0")
    with pixl_db.connect(demo_settings, autocommit=True) as conn:
        job_id = _insert_job(conn, stack.settings.raw.url, raw_study_id, datasets)
        assert anonymiser.run_once(conn) and anonymiser.run_once(conn)
        job = _job(conn, job_id)
        assert job["state"] == "exported"
        copy_id = find_study(stack.anon, job["pseudo_study_uid"])
        assert copy_id is not None  # kept for inspection

        node, keep = demo_settings.anon.url, demo_settings.anon_keep_hours
        assert copies.delete_expired_copies(conn, stack.anon, node, keep) == 0  # not yet
        conn.execute("UPDATE anon_copies SET exported_at = now() - make_interval(hours => %s)"
                     " WHERE job_id = %s", (int(keep) + 1, job_id))
        assert copies.delete_expired_copies(conn, stack.anon, node, keep) == 1
    assert find_study(stack.anon, job["pseudo_study_uid"]) is None
