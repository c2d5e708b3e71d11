"""Benchmark of anon's ingest: one study into anon with PIXL's de-identification,
against Orthanc's own `/anonymize` of the same study, side by side in one run.

Starts a private native stack (PostgreSQL, raw, anon, ...) on free ports, stores a
generated CT study into raw, then, in alternating rounds:
- native: every instance is read from raw and stored into anon over HTTP, then
  anon's built-in `POST /studies/{id}/anonymize` makes the anonymised copy
  (Orthanc's own C++ de-identification, the 2021b profile);
- pixl: a job is handed to anon (state `anonymising`), whose plugin fetches every
  instance from raw, de-identifies it (allow-list rules, keyed pseudonyms, the
  leak guard) and stores it; timed by the database's own timestamps, from the
  hand-off to the job entering `exporting`.

    .venv/bin/python -m benchmarks.anon [--instances 200] [--size 256] [--rounds 3]

Goal: PIXL at least 0.7 of Orthanc's native speed. The last line is key=value pairs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.native import free_port_base, private_stack_settings
from orthanc_plugins.common import db
from orthanc_plugins.common.orthanc_api import HttpOrthanc, find_study, get_json, post_json
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.stack import Stack

PROJECT = "bench-anon"


def bench_project(folder: Path) -> Path:
    """The demo project's rules, sent nowhere: the benchmark measures de-identification."""
    folder.mkdir(parents=True)
    text = (REPO_ROOT / "projects" / "demo.yaml").read_text()
    text = text.replace('name: "demo"', f'name: "{PROJECT}"')
    text = text.replace('dicom: "ftps"', 'dicom: "none"').replace('parquet: "ftps"', 'parquet: "none"')
    (folder / f"{PROJECT}.yaml").write_text(text)
    shutil.copytree(REPO_ROOT / "projects" / "image-operations", folder / "image-operations")
    return folder


def native_round(raw: HttpOrthanc, anon: HttpOrthanc, raw_study_id: str, study_uid: str) -> float:
    instances = get_json(raw, f"/studies/{raw_study_id}/instances")
    started = time.perf_counter()
    for instance in instances:
        anon.post("/instances", raw.get(f"/instances/{instance['ID']}/file"))
    original = find_study(anon, study_uid)
    anonymised = post_json(anon, f"/studies/{original}/anonymize", {})
    elapsed = time.perf_counter() - started
    anon.delete(f"/studies/{original}")
    anon.delete(f"/studies/{anonymised['ID']}")
    return elapsed


def pixl_round(settings, anon: HttpOrthanc, raw_study_id: str, round_index: int) -> float:
    with db.connect(settings, autocommit=True) as conn:
        extract_id = conn.execute(
            "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind)"
            " VALUES (%s, %s, now(), 'csv') RETURNING id", (PROJECT, f"bench-{round_index}"),
        ).fetchone()[0]
        job_id = conn.execute(
            "INSERT INTO study_jobs (extract_id, project_slug, mrn, state, raw_node, raw_study_id,"
            " state_times) VALUES (%s, %s, 'bench', 'anonymising', %s, %s,"
            " jsonb_build_object('anonymising', clock_timestamp())) RETURNING id",
            (extract_id, PROJECT, settings.raw.url, raw_study_id),
        ).fetchone()[0]
        deadline = time.monotonic() + 600
        while True:
            state, times, pseudo_uid, error = conn.execute(
                "SELECT state, state_times, pseudo_study_uid, last_error FROM study_jobs WHERE id = %s",
                (job_id,),
            ).fetchone()
            if "exporting" in times or state in ("skipped", "failed"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("anon did not finish the study")
            time.sleep(0.05)
        if "exporting" not in times:
            raise RuntimeError(f"anon did not keep the study: {state}: {error}")
        elapsed = conn.execute(
            "SELECT extract(epoch FROM (state_times->>'exporting')::timestamptz"
            " - (state_times->>'anonymising')::timestamptz) FROM study_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()[0]
    while True:  # wait for the export ('none') to finish, then leave anon as it was
        with db.connect(settings) as conn:
            if conn.execute("SELECT state FROM study_jobs WHERE id = %s", (job_id,)).fetchone()[0] == "exported":
                break
        time.sleep(0.05)
    anon.delete(f"/studies/{find_study(anon, pseudo_uid)}")
    return float(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="instances in the study")
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each image")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="pixl-bench-anon-"))
    settings = private_stack_settings(state, bench_project(state / "projects"), free_port_base())
    stack = Stack(settings)
    try:
        stack.up()
        raw = HttpOrthanc(settings.raw.url, settings.orthanc_auth)
        anon = HttpOrthanc(settings.anon.url, settings.orthanc_auth)
        series = 4
        spec = studygen.StudySpec(modality="CT", series=series, instances_per_series=args.instances // series,
                                  rows=args.size, columns=args.size, seed=77)
        datasets = studygen.generate_study(spec, studygen.make_patient(77))
        storescu(studygen.write_study(datasets, state / "study"), settings.raw,
                 calling_aet=settings.vna.aet)
        study_uid = str(datasets[0].StudyInstanceUID)
        raw_study_id = find_study(raw, study_uid)
        count = len(datasets)
        print(f"study: {count} CT instances of {args.size}x{args.size}, {args.rounds} rounds each")

        native, pixl = [], []
        for index in range(args.rounds):
            native.append(native_round(raw, anon, raw_study_id, study_uid))
            pixl.append(pixl_round(settings, anon, raw_study_id, index))
            print(f"  round {index + 1}: native {native[-1]:.2f} s, pixl {pixl[-1]:.2f} s")
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)

    native_s, pixl_s = statistics.median(native), statistics.median(pixl)
    print(f"native (ingest + /anonymize): {count / native_s:.0f} instances/s")
    print(f"pixl (anon plugin):           {count / pixl_s:.0f} instances/s")
    print(f"pixl speed / native speed:    {native_s / pixl_s:.2f} (goal >= 0.7)")
    print(f"instances={count} size={args.size} native_s={native_s:.2f} pixl_s={pixl_s:.2f} "
          f"native_per_s={count / native_s:.1f} pixl_per_s={count / pixl_s:.1f} "
          f"pixl_vs_native={native_s / pixl_s:.2f}")


if __name__ == "__main__":
    main()
