"""What the operator-tool tests share: studies in the VNA, cohorts, waiting for jobs."""

from __future__ import annotations

import datetime
import itertools
import os
import random
import time
from pathlib import Path

import requests

from pixl_stack import studygen
from pixl_stack.dcmtk import storescu

PROJECT = "test-extract-uclh-omop-cdm"  # DX/CR to FTPS, configured in the session stack
END_STATES = ("exported", "not_found", "failed", "skipped")
_stamps = itertools.count(1)
_seeds = itertools.count(random.randrange(10**6, 10**9, 10**4) + 7)


def archive_studies(settings, folder: Path, count: int, *, patient_seed: int | None = None,
                    series: int = 1, instances: int = 2) -> list[studygen.GeneratedStudy]:
    """`count` DX studies stored into the VNA (of one patient if `patient_seed` is given)."""
    studies = []
    for _ in range(count):
        seed = next(_seeds)
        patient = studygen.make_patient(patient_seed if patient_seed is not None else seed)
        spec = studygen.StudySpec(modality="DX", series=series, instances_per_series=instances, seed=seed)
        datasets = studygen.generate_study(spec, patient)
        for ds in datasets:
            # PIXL's fixture projects keep StudyDescription, where generated studies put the
            # patient's name: the leak guard would (rightly) quarantine every instance.
            ds.StudyDescription = "DX chest"
        files = studygen.write_study(datasets, folder / f"study-{seed}")
        first = datasets[0]
        studies.append(studygen.GeneratedStudy(
            patient, str(first.AccessionNumber), str(first.StudyInstanceUID),
            datetime.date.fromisoformat(f"{first.StudyDate[:4]}-{first.StudyDate[4:6]}-{first.StudyDate[6:]}"),
            "DX", files))
    storescu([f for s in studies for f in s.files], settings.vna)
    return studies


def cohort_csv(studies, folder: Path, project: str = PROJECT) -> Path:
    """A PIXL CSV cohort of the studies, as an extract with a timestamp of its own."""
    stamp = (datetime.datetime(2032, 1, 1) + datetime.timedelta(
        minutes=next(_stamps) + os.getpid() % 10_000)).isoformat() + "Z"
    header = ("procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,"
              "study_date,study_uid")
    lines = [header]
    for index, study in enumerate(studies):
        lines.append(f"{index},{study.patient.mrn},{study.accession},{project},{stamp},"
                     f"{study.study_date.isoformat()},{study.study_uid}")
    path = folder / f"cohort-{stamp[:16].replace(':', '-')}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def upload_csv(settings, path: Path, **headers: str) -> dict:
    response = requests.post(
        settings.raw.url + "/pixl/extracts", data=path.read_bytes(),
        headers={"Content-Type": "text/csv", "X-PIXL-Filename": path.name, **headers},
        auth=settings.orthanc_auth, timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def jobs(conn, summary: dict) -> list[dict]:
    rows = conn.execute(
        "SELECT j.id, j.state, j.last_error, j.state_times, j.pseudo_study_uid, j.pseudo_patient_id"
        " FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
        " WHERE e.project_slug = %s AND e.extract_name = %s ORDER BY j.id",
        (summary["project"], summary["extract"]),
    ).fetchall()
    keys = ("id", "state", "last_error", "state_times", "pseudo_study_uid", "pseudo_patient_id")
    return [dict(zip(keys, row)) for row in rows]


def wait_for_jobs(conn, summary: dict, condition, what: str, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        current = jobs(conn, summary)
        if current and condition(current):
            return current
        assert time.monotonic() < deadline, f"gave up waiting: {what}: {[(j['id'], j['state']) for j in current]}"
        time.sleep(0.2)


def wait_until_ended(conn, summary: dict, timeout: float = 180) -> list[dict]:
    return wait_for_jobs(conn, summary, lambda js: all(j["state"] in END_STATES for j in js),
                         "every job ended", timeout)
