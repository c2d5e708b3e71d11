"""raw against the real stack: the VNA, raw's plugin worker, anon's receipt, PostgreSQL.

The VNA's own log (verbose while these tests run) is where C-FINDs and C-MOVEs
are counted: what the archive received, not what raw meant to send.
"""

from __future__ import annotations

import datetime
import itertools
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.orthanc_api import get_json, post_json
from orthanc_plugins.raw import throttle
from orthanc_plugins.raw.worker import Worker
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.render import modality
from stack_support import VnaLog

pytestmark = pytest.mark.stack

PROJECT = "test-extract-uclh-omop-cdm"
OTHER_PROJECT = "test-extract-uclh-omop-cdm-dicomweb"
LEFT_RAW = ("queued", "querying", "retrieving", "cached")
_extract_times = itertools.count(1)
_seeds = itertools.count(random.randrange(10**6, 10**9, 10**4))


# --- helpers ---------------------------------------------------------------------


def vna_log(stack) -> VnaLog:
    return VnaLog(stack.vna, stack.settings.state_dir / "logs" / "vna.log", stack.settings.raw.aet)


def put_studies_in_vna(stack, tmp_path: Path, count: int, *, series=2, instances=2):
    studies = []
    for _ in range(count):
        seed = next(_seeds)
        datasets = studygen.generate_study(
            studygen.StudySpec(modality="DX", series=series, instances_per_series=instances, seed=seed),
            studygen.make_patient(seed),
        )
        storescu(studygen.write_study(datasets, tmp_path / f"study-{seed}"), stack.settings.vna)
        studies.append(datasets[0])
    return studies


def cohort(studies, project=PROJECT, extract_time: str | None = None) -> bytes:
    stamp = extract_time or (datetime.datetime(2030, 1, 1) + datetime.timedelta(
        minutes=next(_extract_times) + os.getpid() % 10_000)).isoformat() + "Z"
    lines = ["procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,study_date,study_uid"]
    for index, ds in enumerate(studies):
        lines.append(f"{index},{ds.PatientID},{ds.AccessionNumber},{project},{stamp},2020-01-01,{ds.StudyInstanceUID}")
    return ("\n".join(lines) + "\n").encode()


def upload(stack, body: bytes) -> dict:
    response = requests.post(
        stack.settings.raw.url + "/pixl/extracts", data=body, params={"filename": "cohort.csv"},
        headers={"Content-Type": "text/csv"}, auth=stack.settings.orthanc_auth, timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def jobs_of(conn, summary: dict) -> list[tuple]:
    return conn.execute(
        "SELECT j.id, j.state, j.attempts, j.state_times, j.raw_study_id, j.last_error, j.retries"
        " FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
        " WHERE e.project_slug = %s AND e.extract_name = %s ORDER BY j.id",
        (summary["project"], summary["extract"]),
    ).fetchall()


def wait_until_handed_to_anon(conn, summary: dict, timeout: float = 90) -> list[tuple]:
    """Every job has left raw's hands through anon's receipt (or ended before it)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = jobs_of(conn, summary)
        if jobs and all(j[1] not in LEFT_RAW for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"jobs still in raw: {[(j[0], j[1], j[5]) for j in jobs]}"
        time.sleep(0.2)


def wait_until_anon_is_done(conn, summary: dict, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while any(j[1] in ("cached", "anonymising") for j in jobs_of(conn, summary)):
        assert time.monotonic() < deadline, "anon did not take the studies"
        time.sleep(0.2)


@pytest.fixture
def conn(stack):
    with pixl_db.connect(stack.settings, autocommit=True) as connection:
        yield connection


@pytest.fixture
def controls(stack, conn):
    """The shared controls, put back as they were after the test."""
    throttle.ensure_controls(conn, stack.settings)
    before = throttle.read_controls(conn)
    yield conn
    throttle.update_controls(conn, max_in_flight=before.max_in_flight,
                             studies_per_second=before.studies_per_second, paused=False)


# --- tests -----------------------------------------------------------------------


def test_extract_ends_cached_and_handed_to_anon_with_exactly_the_expected_archive_traffic(
    stack, conn, controls, tmp_path
):
    throttle.update_controls(conn, max_in_flight=5, studies_per_second=50, paused=False)
    studies = put_studies_in_vna(stack, tmp_path, 3)
    vna = vna_log(stack)
    body = cohort(studies)

    summary = upload(stack, body)
    assert (summary["studies"], summary["queued"]) == (3, 3)
    jobs = wait_until_handed_to_anon(conn, summary)

    assert all("anonymising" in j[3] and "cached" in j[3] for j in jobs), jobs
    for ds, job in zip(studies, jobs, strict=True):
        found = post_json(stack.raw, "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": ds.StudyInstanceUID}})
        assert len(found) == 4
        assert get_json(stack.raw, f"/studies/{job[4]}")["MainDicomTags"]["StudyInstanceUID"] == ds.StudyInstanceUID
    assert vna.counts() == (3, 3)  # one study-level C-FIND and one C-MOVE per study

    # The same extract again: nothing is added, nothing moves.
    again = upload(stack, body)
    assert (again["queued"], len(jobs_of(conn, again))) == (0, 3)
    time.sleep(1.5)
    assert vna.counts() == (3, 3)

    # Another project wants the same studies: processed once more for it, from raw's cache.
    other = upload(stack, cohort(studies, project=OTHER_PROJECT))
    assert other["queued"] == 3
    other_jobs = wait_until_handed_to_anon(conn, other)
    assert all("anonymising" in j[3] for j in other_jobs)
    assert {j[4] for j in other_jobs} == {j[4] for j in jobs}
    assert vna.counts() == (3, 3)


def test_a_partial_copy_in_raw_fetches_only_the_missing_instances(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=5, studies_per_second=50, paused=False)
    (study,) = put_studies_in_vna(stack, tmp_path, 1, series=2, instances=3)
    summary = upload(stack, cohort([study]))
    (job,) = wait_until_handed_to_anon(conn, summary)
    wait_until_anon_is_done(conn, summary)  # else anon, missing them, would have raw fetch them again
    instances = get_json(stack.raw, f"/studies/{job[4]}/instances")
    for instance in instances[:2]:
        stack.raw.delete(f"/instances/{instance['ID']}")

    vna = vna_log(stack)
    later = upload(stack, cohort([study], project=OTHER_PROJECT))
    wait_until_handed_to_anon(conn, later)

    assert len(get_json(stack.raw, f"/studies/{job[4]}/instances")) == 6
    # study C-FIND + instance-level C-FIND + the missing-instances query; one C-MOVE per missing instance
    assert vna.counts() == (3, 2)


def test_a_study_missing_from_the_vna_ends_not_found(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=5, studies_per_second=50, paused=False)
    (present,) = put_studies_in_vna(stack, tmp_path, 1)
    absent = studygen.generate_study(studygen.StudySpec(modality="DX", seed=next(_seeds)),
                                     studygen.make_patient(next(_seeds)))[0]
    vna = vna_log(stack)
    summary = upload(stack, cohort([present, absent]))
    jobs = wait_until_handed_to_anon(conn, summary)

    assert [j[1] for j in jobs][1] == "not_found"
    assert jobs[1][5] == "no archive (vna) holds the study"
    assert "anonymising" in jobs[0][3]
    # present: 1 C-FIND + 1 C-MOVE; absent: by study UID, then by patient ID + accession
    assert vna.counts() == (3, 1)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


class GatedRelay:
    """A TCP relay in front of a raw server's DICOM port that holds every connection
    (the VNA's C-STORE of a C-MOVE) until `gate` opens: transfers started meanwhile stay
    in flight, whatever the machine's speed."""

    def __init__(self, target_port: int, gate: threading.Event):
        self.target_port = target_port
        self.gate = gate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        self.gate.wait()
        with client, socket.create_connection(("127.0.0.1", self.target_port)) as upstream:
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join(60)

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _point_vna_at(stack, name: str, node, port: int) -> None:
    entry = dict(modality(node, find=True, move=True, store=False), Host="127.0.0.1", Port=port)
    response = requests.put(f"{stack.settings.vna.url}/modalities/{name}", json=entry,
                            auth=stack.settings.orthanc_auth, timeout=10)
    assert response.status_code == 200, response.text


def _transfer_holders(conn) -> list[str]:
    """The instance name of the holder of each live transfer lease ("raw" for the first)."""
    return [row[0].split("@")[0] for row in conn.execute(
        "SELECT lease_owner FROM study_jobs WHERE state IN ('querying', 'retrieving')"
        " AND lease_expires_at > now()")]


def test_in_flight_limit_holds_with_two_raw_instances(stack, conn, controls, tmp_path):
    # A server holds at most one transfer per worker thread, so a limit of one more than
    # a server's threads is reached only with both servers transferring at once; the VNA's
    # deliveries are held at a relay until it is, then released.
    threads = Worker(stack.settings, api=None).threads
    limit = threads + 1
    throttle.update_controls(conn, max_in_flight=limit, studies_per_second=100, paused=True)
    studies = put_studies_in_vna(stack, tmp_path, 2 * threads + 2, series=1, instances=2)
    # A second raw Orthanc server on the same database, as when scaling out; both are up
    # (and healthy) before there is any work.
    second = stack.stack.start_raw_instance("b", port_offset=100)
    gate = threading.Event()
    relays = {"raw": GatedRelay(stack.settings.raw.dicom_port, gate),
              "raw-b": GatedRelay(second.raw.dicom_port, gate)}
    sampled_peak = 0
    try:
        _point_vna_at(stack, "raw", stack.settings.raw, relays["raw"].port)
        _point_vna_at(stack, "raw-b", second.raw, relays["raw-b"].port)
        summary = upload(stack, cohort(studies))
        throttle.update_controls(conn, paused=False)
        deadline = time.monotonic() + 120
        while len(holders := _transfer_holders(conn)) < limit:
            sampled_peak = max(sampled_peak, len(holders))
            assert time.monotonic() < deadline, f"transfers held: {holders}"
            time.sleep(0.02)
        sampled_peak = max(sampled_peak, len(holders))
        held_at_once = sorted(set(holders))
        gate.set()
        while any(j[1] in LEFT_RAW for j in jobs_of(conn, summary)):
            sampled_peak = max(sampled_peak, throttle.read_controls(conn).in_flight)
            assert time.monotonic() < deadline, "transfers did not finish"
            time.sleep(0.02)
        raw_nodes = [row[0] for row in conn.execute(
            "SELECT raw_node FROM study_jobs WHERE id = ANY(%s)", ([j[0] for j in jobs_of(conn, summary)],)
        )]
    finally:
        gate.set()
        for relay in relays.values():
            relay.close()
        _point_vna_at(stack, "raw", stack.settings.raw, stack.settings.raw.dicom_port)
        stack.stack.stop_raw_instance("b")

    assert held_at_once == ["b", "raw"]  # both servers held transfers at the same time
    jobs = jobs_of(conn, summary)
    intervals = [
        (datetime.datetime.fromisoformat(j[3]["querying"]).timestamp(),
         datetime.datetime.fromisoformat(j[3]["cached"]).timestamp())
        for j in jobs
    ]
    assert _max_overlap(intervals) <= limit  # never exceeded (from the recorded times)
    assert sampled_peak <= limit
    # Both servers fetched part of the studies, each into its own cache.
    assert set(raw_nodes) == {stack.settings.raw.url, second.raw.url}


def test_a_rate_change_takes_effect_while_running(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=10, studies_per_second=0.5, paused=False)
    conn.execute("UPDATE transfer_controls SET tokens = 0, tokens_updated_at = clock_timestamp()")
    studies = put_studies_in_vna(stack, tmp_path, 8)
    summary = upload(stack, cohort(studies))
    time.sleep(4)
    started_slow = sum("querying" in j[3] for j in jobs_of(conn, summary))
    changed_at = time.time()
    throttle.update_controls(conn, studies_per_second=50)
    jobs = wait_until_handed_to_anon(conn, summary, timeout=60)

    assert started_slow <= 3  # 0.5 studies/s for 4 s
    starts = sorted(datetime.datetime.fromisoformat(j[3]["querying"]).timestamp() for j in jobs)
    assert starts[-1] - changed_at < 5  # the rest started at once after the change


def _raw_pid(stack) -> int:
    return next(s.pid for s in stack.stack.status() if s.name == "raw")


def test_killing_raw_mid_transfer_loses_no_job(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=4, studies_per_second=50, paused=False)
    studies = put_studies_in_vna(stack, tmp_path, 4, series=4, instances=20)
    summary = upload(stack, cohort(studies))
    deadline = time.monotonic() + 60
    while not any(j[1] == "retrieving" for j in jobs_of(conn, summary)):
        assert time.monotonic() < deadline, "no transfer started"
        time.sleep(0.05)
    os.kill(_raw_pid(stack), signal.SIGKILL)
    interrupted = [j[0] for j in jobs_of(conn, summary) if j[1] in ("querying", "retrieving")]
    time.sleep(1)
    stack.stack.up()  # starts what is not running: raw

    jobs = wait_until_handed_to_anon(conn, summary, timeout=120)
    assert all("anonymising" in j[3] for j in jobs), [(j[0], j[1], j[5]) for j in jobs]
    assert interrupted  # and every one of them was taken back and finished (above)
    for ds in studies:
        found = post_json(stack.raw, "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": ds.StudyInstanceUID}})
        assert len(found) == 80


def test_a_vna_that_is_down_makes_jobs_retry_and_finish_once_it_is_back(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=5, studies_per_second=50, paused=False)
    studies = put_studies_in_vna(stack, tmp_path, 2)
    vna_pid = next(s.pid for s in stack.stack.status() if s.name == "vna")
    os.kill(vna_pid, signal.SIGKILL)
    try:
        summary = upload(stack, cohort(studies))
        deadline = time.monotonic() + 60
        while not all(j[6] >= 2 and j[1] == "queued" for j in jobs_of(conn, summary)):
            assert time.monotonic() < deadline, jobs_of(conn, summary)
            time.sleep(0.2)
        jobs = jobs_of(conn, summary)
        assert all("C-FIND on vna failed" in j[5] for j in jobs)
        assert all(j[2] == 0 for j in jobs)  # an outage is no fault of the studies: no attempt counted
    finally:
        stack.stack.up()
    jobs = wait_until_handed_to_anon(conn, summary, timeout=60)
    assert all("anonymising" in j[3] for j in jobs)
    # The outage's error is gone once raw succeeded (anon, working on, may write its own).
    assert not any(j[5] and "C-FIND" in j[5] for j in jobs)
