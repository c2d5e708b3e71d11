"""Benchmark of raw's work queue: loading a 100,000-study extract, then claiming jobs.

Runs a private PostgreSQL (as the tests do) and compares, side by side:
- load: PIXL's loader (CSV parse + COPY into a temporary table + one INSERT ... SELECT)
  against a naive loader (one INSERT per row in one transaction);
- claim: `claim_next_job` (FOR UPDATE SKIP LOCKED, partial index) against a naive claim
  (SELECT ... FOR UPDATE without SKIP LOCKED, then UPDATE), each by 2 concurrent claimers,
  and the throttled claim the workers use (`claim_transfer_job`, limits set wide open).

    .venv/bin/python benchmarks/queue.py [--studies 100000] [--claim-seconds 5]

Goals: load <= 10 s, claim >= 1,000 jobs/s. The last line is key=value pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where its name
# would shadow the standard library's `queue`: put the repository there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import dataclasses
import datetime
import socket
import tempfile
import threading
import time

from orthanc_plugins.common import db
from orthanc_plugins.common.settings import Settings, load_settings
from orthanc_plugins.raw import queue, throttle
from orthanc_plugins.raw.extracts import queue_extract, read_csv_cohort
from orthanc_plugins.raw.worker import worker_connection
from pixl_stack.postgres import PostgresCluster

PROJECT_YAML = """
project: {name: "bench-project", modalities: ["CT"]}
tag_operation_files: {base: ["base.yaml"]}
allowed_manufacturers: [{regex: ".*", exclude_series_numbers: []}]
min_instances_per_series: 1
destination: {dicom: "none", parquet: "none"}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cohort_csv(n: int, generated: str) -> bytes:
    lines = ["procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,study_date,study_uid"]
    lines += [
        f"{i},MRN{i:08d},ACC{i:09d},bench-project,{generated},2020-01-01,1.2.826.0.1.3680043.10.1.{i}"
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def fresh_database(cluster: PostgresCluster, base: Settings, name: str) -> Settings:
    cluster.ensure_role_and_database(base.pg_user, base.pg_password, name)
    settings = dataclasses.replace(base, pg_database=name)
    with db.connect(settings) as conn:
        db.migrate(conn)
    return settings


def pixl_load(settings: Settings, n: int) -> float:
    start = time.perf_counter()
    extract = read_csv_cohort(cohort_csv(n, "2024-01-01T00:00:00Z"), "bench.csv")
    with db.connect(settings, autocommit=True) as conn:
        summary = queue_extract(conn, settings, extract)
    assert summary.queued == n, summary
    return time.perf_counter() - start


def naive_load(settings: Settings, n: int) -> float:
    start = time.perf_counter()
    extract = read_csv_cohort(cohort_csv(n, "2024-01-02T00:00:00Z"), "naive.csv")
    with db.connect(settings) as conn, conn.transaction():
        extract_id = conn.execute(
            "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind)"
            " VALUES (%s, %s, now(), 'csv') RETURNING id", (extract.project_slug, "naive"),
        ).fetchone()[0]
        for row in extract.rows:
            conn.execute(
                "INSERT INTO study_jobs (extract_id, project_slug, mrn, accession_number, study_uid,"
                " study_date, procedure_occurrence_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (extract_id, extract.project_slug, row.mrn, row.accession_number, row.study_uid,
                 row.study_date, row.procedure_occurrence_id),
            )
    return time.perf_counter() - start


def naive_claim(conn, owner: str, lease: float):
    with conn.transaction():
        row = conn.execute(
            "SELECT id FROM study_jobs WHERE state = 'queued' AND next_attempt_at <= now()"
            " ORDER BY id LIMIT 1 FOR UPDATE"
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE study_jobs SET state = 'querying', lease_owner = %s, attempts = attempts + 1,"
            " lease_expires_at = now() + make_interval(secs => %s) WHERE id = %s",
            (owner, lease, row[0]),
        )
        return row[0]


def claim_rate(connect, claim, seconds: float, claimers: int = 2) -> tuple[float, bool]:
    """Jobs claimed per second by concurrent claimers; and whether no job was taken twice."""
    taken: list[list[int]] = [[] for _ in range(claimers)]
    stop = time.perf_counter() + seconds

    def run(index: int) -> None:
        with connect() as conn:
            while time.perf_counter() < stop:
                job = claim(conn, f"bench-{index}", 600)
                if job is None:
                    break
                taken[index].append(job if isinstance(job, int) else job.id)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(claimers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ids = [i for part in taken for i in part]
    return len(ids) / elapsed, len(ids) == len(set(ids))


def throttled_claim(conn, owner: str, lease: float):
    """A worker's claim through the shared limits, then the end of its transfer (slot freed)."""
    job, _ = throttle.claim_transfer_job(conn, owner, lease)
    if job is not None:
        queue.move_job(conn, job.id, owner, "cached")
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--naive-studies", type=int, default=20_000,
                        help="rows for the naive loader (its rate is compared, not its total)")
    parser.add_argument("--claim-seconds", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pixl-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        (root / "projects").mkdir()
        (root / "projects" / "bench-project.yaml").write_text(PROJECT_YAML)
        (root / "rules").mkdir()
        (root / "rules" / "base.yaml").write_text("[]\n")
        base = dataclasses.replace(
            load_settings(), state_dir=root / "state", pg_port=free_port(),
            projects_dir=root / "projects", tag_rules_dir=root / "rules",
            max_transfers_in_flight=1_000_000, studies_per_second=1e9,
        )
        cluster = PostgresCluster(root / "pg", base.pg_port)
        cluster.start()
        try:
            pixl = fresh_database(cluster, base, "bench_pixl")
            naive = fresh_database(cluster, base, "bench_naive")
            load_s = pixl_load(pixl, args.studies)
            naive_s = naive_load(naive, args.naive_studies)
            load_rate, naive_rate = args.studies / load_s, args.naive_studies / naive_s
            print(f"load  pixl : {args.studies} studies in {load_s:.2f} s ({load_rate:,.0f} studies/s)")
            print(f"load  naive: {args.naive_studies} studies in {naive_s:.2f} s ({naive_rate:,.0f} studies/s)")

            # The naive claim runs on the naive database (same row count for fairness of scans).
            with db.connect(naive, autocommit=True) as conn:
                conn.execute("DELETE FROM study_jobs")
            pixl_load(naive, args.studies)
            sync_s, sync_ok = claim_rate(
                lambda: db.connect(pixl, autocommit=True), queue.claim_next_job, args.claim_seconds)
            claim_s, claim_ok = claim_rate(
                lambda: worker_connection(pixl), queue.claim_next_job, args.claim_seconds)
            naive_claim_s, naive_ok = claim_rate(
                lambda: db.connect(naive, autocommit=True), naive_claim, args.claim_seconds)
            with db.connect(pixl, autocommit=True) as conn:
                throttle.ensure_controls(conn, pixl)
            throttled_s, throttled_ok = claim_rate(
                lambda: worker_connection(pixl), throttled_claim, args.claim_seconds)
            print(f"claim naive (FOR UPDATE, sync commit)       : {naive_claim_s:,.0f} jobs/s, unique: {naive_ok}")
            print(f"claim pixl (SKIP LOCKED, sync commit)       : {sync_s:,.0f} jobs/s, unique: {sync_ok}")
            print(f"claim pixl (SKIP LOCKED, worker connection) : {claim_s:,.0f} jobs/s, unique: {claim_ok}")
            print(f"claim+release through the shared throttle  : {throttled_s:,.0f} jobs/s, unique: {throttled_ok}")
        finally:
            cluster.stop()

    print(
        f"studies={args.studies} load_s={load_s:.2f} load_per_s={load_rate:.0f} "
        f"naive_load_per_s={naive_rate:.0f} load_speedup={load_rate / naive_rate:.1f} "
        f"claim_per_s={claim_s:.0f} naive_claim_per_s={naive_claim_s:.0f} "
        f"sync_claim_per_s={sync_s:.0f} claim_speedup={claim_s / naive_claim_s:.2f} throttled_claim_per_s={throttled_s:.0f} "
        f"date={datetime.date.today().isoformat()}"
    )


if __name__ == "__main__":
    main()
