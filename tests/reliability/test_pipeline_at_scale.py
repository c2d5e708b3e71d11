"""The whole pipeline on a stack of its own, where scale and concurrency break things:
an extract four times raw's cache, two anon servers with a lease shorter than one
export, and one study named by two extracts at once."""

from __future__ import annotations

import datetime
import os
import re
import signal
import time
import zipfile
from collections import Counter

import pytest
import requests

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.orthanc_api import HttpOrthanc, get_json
from orthanc_plugins.common.secrets import destination_secret_name, open_secret_store
from orthanc_plugins.common.settings import REPO_ROOT
from orthanc_plugins.raw import throttle
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.demo import configure_destinations
from pixl_stack.ftps_server import read_upload_log
from pixl_stack.stack import Stack
from stack_support import LoopbackServer, RelayHandler, VnaLog

pytestmark = pytest.mark.stack

RAW_MAX_STORAGE_MB = 20
ENDED = ("exported", "not_found", "failed", "skipped")


@pytest.fixture(scope="module")
def scale_stack(base_settings, extra_stack_settings):
    settings = extra_stack_settings(
        base_settings, 1, base_settings.state_dir / "scale-stack",
        projects_dir=REPO_ROOT / "projects", tag_rules_dir=REPO_ROOT / "tag_rules",
        raw_max_storage_mb=RAW_MAX_STORAGE_MB, anon_keep_hours=0.0,
        job_lease_seconds=1.5, retry_base_seconds=0.2, retry_max_seconds=0.5, max_attempts=3,
    )
    stack = Stack(settings)
    try:
        stack.up()
        configure_destinations(stack, open_secret_store(settings))
        with pixl_db.connect(settings, autocommit=True) as conn:
            throttle.ensure_controls(conn, settings)
            throttle.update_controls(conn, max_in_flight=5, studies_per_second=100, paused=False)
        yield stack
    finally:
        stack.down()


_seeds = iter(range(880_000, 990_000, 7))
_stamps = iter(range(1, 10_000))


def _ct_studies(stack, tmp_path, count: int, *, instances: int, size: int = 64):
    studies = []
    for _ in range(count):
        seed = next(_seeds)
        spec = studygen.StudySpec(modality="CT", series=2, instances_per_series=instances // 2,
                                  rows=size, columns=size, seed=seed)
        study = studygen.write_generated_study(spec, studygen.make_patient(seed), tmp_path / f"s{seed}")
        storescu(study.files, stack.settings.vna)
        studies.append(study)
    return studies


def _load(stack, studies, project: str) -> dict:
    stamp = (datetime.datetime(2031, 1, 1) + datetime.timedelta(minutes=next(_stamps))).isoformat() + "Z"
    lines = ["procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,study_date,study_uid"]
    lines += [f"{i},{s.patient.mrn},{s.accession},{project},{stamp},{s.study_date},{s.study_uid}"
              for i, s in enumerate(studies)]
    response = requests.post(
        stack.settings.raw.url + "/pixl/extracts", data=("\n".join(lines) + "\n").encode(),
        params={"filename": "cohort.csv"}, headers={"Content-Type": "text/csv"},
        auth=stack.settings.orthanc_auth, timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def ftps_uploads(stack) -> Counter:
    """Completed uploads of each study of project demo, from the FTPS server's own log."""
    uploads: Counter = Counter()
    for record in read_upload_log(stack.ftps_upload_log):
        match = re.search(r"(?:^|/)demo/([0-9.]+)\.zip\.part$", record.path)
        if record.event == "received" and match:
            uploads[match.group(1)] += 1
    return uploads


def _jobs(conn, summary) -> list[tuple]:
    return conn.execute(
        "SELECT j.id, j.state, j.last_error, j.pseudo_study_uid FROM study_jobs j"
        " JOIN extracts e ON e.id = j.extract_id WHERE e.project_slug = %s AND e.extract_name = %s"
        " ORDER BY j.id", (summary["project"], summary["extract"]),
    ).fetchall()


def _wait_until_ended(conn, summaries, timeout: float = 600, sample=lambda: None) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while True:
        sample()
        jobs = [job for summary in summaries for job in _jobs(conn, summary)]
        if jobs and all(j[1] in ENDED for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"not ended: {[(j[0], j[1], j[2]) for j in jobs]}"
        time.sleep(0.3)


def test_an_extract_four_times_raws_cache_is_exported_whole_and_fetched_once(scale_stack, tmp_path):
    # 8 studies of 20 instances of 512x512 16-bit CT: 8 x 10.5 MB, over four times raw's 20 MB.
    studies = _ct_studies(scale_stack, tmp_path, 8, instances=20, size=512)
    vna = VnaLog(HttpOrthanc(scale_stack.settings.vna.url, scale_stack.settings.orthanc_auth),
                 scale_stack.settings.state_dir / "logs" / "vna.log", scale_stack.settings.raw.aet)
    raw = HttpOrthanc(scale_stack.settings.raw.url, scale_stack.settings.orthanc_auth)
    peak_mb = [0.0]

    def sample_raw_storage():
        peak_mb[0] = max(peak_mb[0], float(get_json(raw, "/statistics")["TotalDiskSizeMB"]))

    with pixl_db.connect(scale_stack.settings, autocommit=True) as conn:
        summary = _load(scale_stack, studies, "demo")
        jobs = _wait_until_ended(conn, [summary], sample=sample_raw_storage)
    assert Counter(j[1] for j in jobs) == {"exported": 8}, jobs
    assert vna.counts()[1] == 8  # one C-MOVE per study: none was recycled before anon had it
    assert peak_mb[0] <= RAW_MAX_STORAGE_MB * 1.1
    ftps_root = scale_stack.ftps_root / "demo"
    assert sorted(p.name for p in ftps_root.glob("*.zip")) == sorted(f"{j[3]}.zip" for j in jobs)
    assert ftps_uploads(scale_stack) == {j[3]: 1 for j in jobs}
    anon = HttpOrthanc(scale_stack.settings.anon.url, scale_stack.settings.orthanc_auth)
    assert get_json(anon, "/studies") == []  # anon_keep_hours 0: anon keeps no copy
    assert not list((scale_stack.settings.state_dir / "anon-staging").rglob("*.zip*"))


class SlowStowProxy:
    """A DICOMweb server's front that takes `delay` seconds over every STOW-RS request
    (longer than a lease), counting them by study, then forwards it to the real server."""

    def __init__(self, target: str, auth: tuple[str, str], delay: float):
        self.posts: Counter = Counter()
        proxy = self

        class Handler(RelayHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.posts[self.path] += 1
                time.sleep(delay)
                self.relay(requests.post(target + self.path.removeprefix("/dicom-web"), data=body,
                                         headers={"Content-Type": self.headers["Content-Type"],
                                                  "Accept": self.headers.get("Accept", "*/*")},
                                         auth=auth, timeout=120))

        self.server = LoopbackServer(Handler)
        self.url = self.server.url + "/dicom-web"

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.server.__exit__(*exc_info)


def test_two_anon_servers_with_a_lease_shorter_than_an_export_send_each_study_once(scale_stack, tmp_path):
    settings = scale_stack.settings
    second = scale_stack.start_anon_instance("second", 100)
    try:
        secrets = open_secret_store(settings)
        delay = 3 * settings.job_lease_seconds
        with SlowStowProxy(settings.dicomweb_destination.url + "/dicom-web", settings.orthanc_auth,
                           delay) as proxy:
            secrets.set(destination_secret_name("demo-dicomweb", "dicomweb", "url"), proxy.url)
            studies = _ct_studies(scale_stack, tmp_path, 6, instances=4)
            with pixl_db.connect(settings, autocommit=True) as conn:
                summary = _load(scale_stack, studies, "demo-dicomweb")
                jobs = _wait_until_ended(conn, [summary])
                workers = {row[0] for row in conn.execute(
                    "SELECT DISTINCT anon_node FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
                    " WHERE e.extract_name = %s", (summary["extract"],)).fetchall()}
        assert Counter(j[1] for j in jobs) == {"exported": 6}, jobs
        assert workers == {settings.anon.url, second.anon.url}  # both anon servers took studies
        assert proxy.posts == {f"/dicom-web/studies/{j[3]}": 1 for j in jobs}
    finally:
        scale_stack.stop_extra("anon-second")
        configure_destinations(scale_stack, open_secret_store(settings))


def test_a_study_named_by_two_extracts_at_once_is_exported_once(scale_stack, tmp_path):
    settings = scale_stack.settings
    (study,) = _ct_studies(scale_stack, tmp_path, 1, instances=4)
    with pixl_db.connect(settings, autocommit=True) as conn:
        throttle.update_controls(conn, paused=True)  # both extracts queued before any work
        first, second = _load(scale_stack, [study], "demo"), _load(scale_stack, [study], "demo")
        throttle.update_controls(conn, paused=False)
        jobs = _wait_until_ended(conn, [first, second])
        exports = conn.execute("SELECT count(*) FROM study_exports WHERE pseudo_study_uid = %s",
                               (jobs[0][3],)).fetchone()[0]
    assert [j[1] for j in jobs] == ["exported", "exported"]
    assert jobs[0][3] == jobs[1][3]
    assert exports == 1
    assert ftps_uploads(scale_stack)[jobs[0][3]] == 1


def _wait_for_state(conn, summary, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(j[1] == state for j in _jobs(conn, summary)):
        assert time.monotonic() < deadline, f"no job reached {state}: {_jobs(conn, summary)}"
        time.sleep(0.05)


def _extract_under_way(stack, tmp_path) -> tuple[dict, Counter]:
    """Six studies loaded and anon at work on them; and the uploads made before."""
    studies = _ct_studies(stack, tmp_path, 6, instances=20, size=256)
    before = ftps_uploads(stack)
    with pixl_db.connect(stack.settings, autocommit=True) as conn:
        summary = _load(stack, studies, "demo")
        _wait_for_state(conn, summary, "anonymising")
    return summary, before


def test_anon_killed_mid_extract_loses_and_doubles_nothing(scale_stack, tmp_path):
    settings = scale_stack.settings
    summary, before = _extract_under_way(scale_stack, tmp_path)
    with pixl_db.connect(settings, autocommit=True) as conn:
        anon = next(s for s in scale_stack.status() if s.name == "anon")
        os.kill(anon.pid, signal.SIGKILL)
        time.sleep(1)
        scale_stack.up()  # starts what is not running: anon
        jobs = _wait_until_ended(conn, [summary])
    assert Counter(j[1] for j in jobs) == {"exported": 6}, jobs
    uploads = ftps_uploads(scale_stack) - before
    assert uploads == {j[3]: 1 for j in jobs}


def test_postgresql_killed_mid_extract_loses_and_doubles_nothing(scale_stack, tmp_path):
    settings = scale_stack.settings
    summary, before = _extract_under_way(scale_stack, tmp_path)
    os.kill(scale_stack.postgres.pid(), signal.SIGKILL)
    time.sleep(3)  # raw and anon work on without their database a while
    scale_stack.up()  # starts PostgreSQL again (crash recovery)
    with pixl_db.connect(settings, autocommit=True) as conn:
        jobs = _wait_until_ended(conn, [summary])
    assert Counter(j[1] for j in jobs) == {"exported": 6}, jobs
    uploads = ftps_uploads(scale_stack) - before
    assert set(uploads) == {j[3] for j in jobs}
    # A study whose confirmation PostgreSQL lost in the crash is sent again: the destination
    # holds it once (the same name), and no study went more than twice.
    assert max(uploads.values()) <= 2
    assert len(list((scale_stack.ftps_root / "demo").glob("*.part"))) == 0


def test_a_destination_down_longer_than_the_attempt_budget_fails_nothing(scale_stack, tmp_path):
    settings = scale_stack.settings
    ftps = scale_stack._process("ftps")
    studies = _ct_studies(scale_stack, tmp_path, 2, instances=4)
    ftps.stop()
    try:
        with pixl_db.connect(settings, autocommit=True) as conn:
            summary = _load(scale_stack, studies, "demo")
            deadline = time.monotonic() + 120
            # Far more tries than the stack's max_attempts, each one an outage.
            while not all(row[0] > settings.max_attempts + 2 for row in conn.execute(
                    "SELECT retries FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
                    " WHERE e.extract_name = %s AND j.state = 'exporting'", (summary["extract"],)
            ).fetchall() or [(0,)]):
                assert time.monotonic() < deadline, _jobs(conn, summary)
                time.sleep(0.3)
            jobs = _jobs(conn, summary)
            assert all(j[1] == "exporting" and "FTPS" in (j[2] or "") for j in jobs), jobs
    finally:
        scale_stack.up()  # the FTPS server is back
    with pixl_db.connect(settings, autocommit=True) as conn:
        jobs = _wait_until_ended(conn, [summary])
    assert Counter(j[1] for j in jobs) == {"exported": 2}, jobs


def test_a_study_of_thousands_of_instances_arrives_complete(scale_stack, tmp_path):
    # Small instances, many of them: every step streams (no study is held in memory).
    (study,) = _ct_studies(scale_stack, tmp_path, 1, instances=3000, size=16)
    with pixl_db.connect(scale_stack.settings, autocommit=True) as conn:
        summary = _load(scale_stack, [study], "demo")
        (job,) = _wait_until_ended(conn, [summary], timeout=900)
    assert job[1] == "exported", job
    with zipfile.ZipFile(scale_stack.ftps_root / "demo" / f"{job[3]}.zip") as archive:
        names = [name for name in archive.namelist() if name.endswith(".dcm")]
        assert len(names) == 3000
        assert archive.testzip() is None
