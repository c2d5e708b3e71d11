"""End-to-end benchmark: VNA -> raw -> anon -> FTPS, against the plain chain of the same bytes.

Starts a private native stack (pixl_stack's Stack, on free ports of its own) with a
project of its own (CT kept by the repository's tag rules, destination ftps), fills
its VNA with generated 512x512 16-bit CT studies (not timed), then, in one run:

- chain: the same N studies along the same hops without PIXL: two plain Orthancs
  (no plugins), A and B. A retrieves each study from the VNA by C-MOVE (the VNA
  C-STOREs it into A, as it does into raw), A C-STOREs it into B, and B's study
  archive is streamed to the same FTPS server; 5 studies at a time (the in-flight
  limit of the pipeline);
- pipeline N and 4N: a CSV extract of N studies, then of 4N others, loaded through
  raw's REST API with at most 5 transfers in flight and a high rate; timed by the
  database's own clock, from the first job queued to the last exported. Seconds per
  stage come from the jobs' `state_times`; every study must reach `exported` and its
  zip on the FTPS server must hold every instance.

It prints seconds per stage, instances/s of both and their ratio, the peak memory of
raw, anon, PostgreSQL (all its processes) and the FTPS server, and how the time grows
from N to 4N studies. `--big-study 5000` adds one study of that many instances and
reports the peak memory while it goes through; `--profile DIR` records py-spy profiles
of raw and anon during the N run and prints where their time went.

    .venv/bin/python -m benchmarks.pipeline [--studies 10] [--instances-per-study 200]
        [--series 4] [--size 512] [--big-study 5000] [--profile DIR] [--quick]

Goals: ratio >= 0.7, growth <= 4.4, raw and anon each <= 300 MB. The last line is
key=value pairs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import itertools
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests

from benchmarks.native import free_port_base, private_stack_settings
from benchmarks.resources import PeakMemory, start_profiles, stop_profiles, summarise_profile
from orthanc_plugins.common.http_session import idle_limited_session
from orthanc_plugins.common.secrets import destination_secret_name, open_secret_store
from orthanc_plugins.common.settings import OrthancNode, Settings
from pixl_hooks.destinations.ftps import FtpsSettings, connect, enter_folder
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.processes import ManagedProcess, wait_until
from pixl_stack.render import modality
from pixl_stack.stack import Stack
from tui.client import END_STATES, ClientConfig, RawClient, prepare_upload

PROJECT = "bench-pipeline"
CHAIN_FOLDER = "bench-chain"  # the chain's zips, beside the project's folder on the FTPS server
IN_FLIGHT = 5
STUDIES_PER_SECOND = 1000.0  # "the rate high": the in-flight limit is what holds raw back
# Ports of the two plain Orthancs of the chain: base + offset (HTTP), base + 200 + offset (DICOM).
CHAIN_PORT_OFFSETS = {"chain-a": 46, "chain-b": 47}
STATE_ORDER = ("queued", "querying", "retrieving", "cached", "anonymising", "exporting", "exported")
EXTRACT_TIME = datetime.datetime(2026, 6, 1, 8, 0, 0)
HTTP_TIMEOUT = 3600  # a synchronous store or archive of a big study takes minutes

PROJECT_YAML = f"""\
# The pipeline benchmark's own project: CT kept by the repository's tag rules, sent to FTPS.
project:
    name: "{PROJECT}"
    modalities: ["CT"]

tag_operation_files:
    base: ["base.yaml", "ct.yaml"]
    manufacturer_overrides: null

allowed_manufacturers:
  - regex: ".*"
    exclude_series_numbers: []

min_instances_per_series: 1

destination:
    dicom: "ftps"
    parquet: "none"
"""


@dataclass(frozen=True)
class Shape:
    """How the generated studies look."""

    instances_per_study: int
    series: int
    size: int

    def spec(self, seed: int) -> studygen.StudySpec:
        return studygen.StudySpec(
            modality="CT", series=self.series, instances_per_series=self.instances_per_study // self.series,
            rows=self.size, columns=self.size, seed=seed,
        )


@dataclass(frozen=True)
class BenchStudy:
    """A study in the VNA: what an extract names it by, and how many instances it has."""

    mrn: str
    accession: str
    study_uid: str
    study_date: datetime.date
    instances: int


@dataclass
class PhaseResult:
    name: str
    studies: int
    instances: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over the studies
    peaks_mb: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds


# --- the stack and the VNA's studies (not timed) ---------------------------------------------


def write_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PROJECT}.yaml").write_text(PROJECT_YAML)
    return folder


def fill_vna(settings: Settings, shape: Shape, seeds: range, workdir: Path) -> list[BenchStudy]:
    """Generate one study per seed and C-STORE it into the VNA (each study written while
    the previous one is being stored); the files are deleted once stored."""
    studies = []

    def store(folder: Path, files: list[Path]) -> None:
        storescu(files, settings.vna, calling_aet="BENCHGEN")
        shutil.rmtree(folder)

    with ThreadPoolExecutor(1) as storer:
        pending = []
        for seed in seeds:
            folder = workdir / f"study-{seed}"
            generated = studygen.write_generated_study(shape.spec(seed), studygen.make_patient(seed),
                                                       folder)
            pending.append(storer.submit(store, folder, generated.files))
            studies.append(BenchStudy(generated.patient.mrn, generated.accession, generated.study_uid,
                                      generated.study_date, len(generated.files)))
        for future in pending:
            future.result()
    return studies


def configure_destination(stack: Stack, settings: Settings) -> None:
    secrets = open_secret_store(settings)
    for name, value in stack.development_destination_settings()["ftp"].items():
        secrets.set(destination_secret_name(PROJECT, "ftp", name), value)


def ftps_settings(stack: Stack) -> FtpsSettings:
    ftp = stack.development_destination_settings()["ftp"]
    return FtpsSettings(ftp["host"], int(ftp["port"]), ftp["username"], ftp["password"], ftp["ca-cert"])


def orthanc_session(settings: Settings) -> requests.Session:
    session = idle_limited_session()
    session.auth = settings.orthanc_auth
    session.verify = settings.http_verify
    return session


def checked(response: requests.Response, doing: str) -> requests.Response:
    if response.status_code != 200:
        raise RuntimeError(f"{doing}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def study_id(session: requests.Session, url: str, study_uid: str) -> str:
    found = checked(session.post(f"{url}/tools/find", json={
        "Level": "Study", "Query": {"StudyInstanceUID": study_uid}}, timeout=60), "C-FIND by REST").json()
    if len(found) != 1:
        raise RuntimeError(f"{url} holds {len(found)} studies of one study UID")
    return found[0]


# --- the plain chain ---------------------------------------------------------------------------


def chain_nodes(settings: Settings, port_base: int) -> dict[str, OrthancNode]:
    return {
        name: OrthancNode(name, name.replace("-", "").upper(), port_base + offset, port_base + 200 + offset)
        for name, offset in CHAIN_PORT_OFFSETS.items()
    }


def start_chain(stack: Stack, settings: Settings, nodes: dict[str, OrthancNode]) -> None:
    """Two plain Orthancs (no plugins, default storage), known to each other and to the VNA;
    their PID files sit beside the stack's so that `Stack.down()` stops them too."""
    a, b = nodes["chain-a"], nodes["chain-b"]
    peers = {
        "chain-a": {"vna": modality(settings.vna, find=True, move=True, store=True),
                    "chain-b": modality(b, find=False, move=False, store=True)},
        "chain-b": {},
    }
    session = orthanc_session(settings)
    for name, node in nodes.items():
        storage = stack.state_dir / "storage" / name
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": f"plain {name}", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": node.http_port, "DicomPort": node.dicom_port, "DicomAet": node.aet,
            "RemoteAccessAllowed": True, "AuthenticationEnabled": True,
            "RegisteredUsers": {settings.orthanc_username: settings.orthanc_password},
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomModalities": peers[name], "SaveJobs": False,
            "ConcurrentJobs": IN_FLIGHT,  # the in-flight studies' stores run side by side
            "Plugins": [],
        }
        config_file = stack.state_dir / "config" / f"{name}.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config, indent=2))
        config_file.chmod(0o600)  # it holds credentials
        process = ManagedProcess(name, stack.run_dir, stack.log_dir)
        process.start(["/usr/sbin/Orthanc", f"--logfile={process.log_file}", str(config_file)],
                      stack.child_environment())

        def answers(url: str = node.url) -> bool:
            try:
                return session.get(f"{url}/system", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, 60, f"plain Orthanc {name}")
    # The VNA answers A's C-MOVE by C-STOREs to A: it must know A by AE title.
    checked(session.put(f"{settings.vna.url}/modalities/chain-a",
                        json=modality(a, find=True, move=True, store=False), timeout=30),
            "the VNA learning chain-a")


def run_chain(settings: Settings, nodes: dict[str, OrthancNode], ftps: FtpsSettings,
              studies: list[BenchStudy]) -> tuple[float, dict[str, float]]:
    """Every study VNA -> A (C-MOVE) -> B (C-STORE) -> FTPS (archive streamed), 5 at a time.
    Returns the wall time and the seconds of each hop summed over the studies."""
    a, b = nodes["chain-a"].url, nodes["chain-b"].url
    hops: dict[str, float] = defaultdict(float)
    hops_lock = threading.Lock()

    def one(study: BenchStudy) -> None:
        session = orthanc_session(settings)
        started = time.perf_counter()
        checked(session.post(f"{a}/modalities/vna/move", json={
            "Level": "Study", "Resources": [{"StudyInstanceUID": study.study_uid}],
            "TargetAet": nodes["chain-a"].aet, "Synchronous": True}, timeout=HTTP_TIMEOUT),
            "C-MOVE VNA to A")
        moved = time.perf_counter()
        checked(session.post(f"{a}/modalities/chain-b/store", json={
            "Resources": [study_id(session, a, study.study_uid)], "Synchronous": True},
            timeout=HTTP_TIMEOUT), "C-STORE A to B")
        stored = time.perf_counter()
        archive_url = f"{b}/studies/{study_id(session, b, study.study_uid)}/archive"
        # identity: a zip gains nothing from HTTP compression, and the chain is the floor
        with session.get(archive_url, stream=True, timeout=HTTP_TIMEOUT,
                         headers={"Accept-Encoding": "identity"}) as archive:
            checked(archive, "B's study archive")
            with connect(ftps, CHAIN_FOLDER, implicit=True) as ftp:
                enter_folder(ftp, CHAIN_FOLDER, create=True)
                ftp.storbinary(f"STOR {study.study_uid}.zip", archive.raw, blocksize=1 << 20)
        uploaded = time.perf_counter()
        with hops_lock:
            hops["VNA -> A (C-MOVE)"] += moved - started
            hops["A -> B (C-STORE)"] += stored - moved
            hops["B archive -> FTPS"] += uploaded - stored

    started = time.perf_counter()
    pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="chain")
    try:
        for future in [pool.submit(one, study) for study in studies]:
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return time.perf_counter() - started, dict(hops)


# --- the pipeline ------------------------------------------------------------------------------


def write_extract(studies: list[BenchStudy], folder: Path, index: int) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["procedure_id", "mrn", "accession_number", "project_name",
                     "extract_generated_timestamp", "study_date", "study_uid", "participant_id"])
    stamp = (EXTRACT_TIME + datetime.timedelta(hours=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for number, study in enumerate(studies, 1):
        writer.writerow([number, study.mrn, study.accession, PROJECT, stamp,
                         study.study_date.isoformat(), study.study_uid, ""])
    path = folder / f"bench-extract-{index}.csv"
    path.write_text(buffer.getvalue())
    return path


def run_pipeline(stack: Stack, settings: Settings, client: RawClient, studies: list[BenchStudy],
                 name: str, index: int, memory: PeakMemory) -> PhaseResult:
    upload = prepare_upload(write_extract(studies, stack.state_dir, index))
    instances = sum(study.instances for study in studies)
    with memory:
        loaded = client.load_extract(upload, dry_run=False)
        if loaded.queued != len(studies):
            raise RuntimeError(f"{name}: raw queued {loaded.queued} of {len(studies)} studies")
        # generous: today's anon does 5 to 15 instances/s
        wait_until_finished(settings, loaded.project, loaded.extract, len(studies),
                            timeout=120 + instances, name=name)
    jobs = job_times(settings, loaded.project, loaded.extract)
    not_exported = [job for job in jobs if job.state != "exported"]
    if not_exported:
        reasons = "; ".join(f"job {j.job_id} {j.state}: {j.last_error}" for j in not_exported[:5])
        raise RuntimeError(f"{name}: {len(not_exported)} of {len(jobs)} studies not exported: {reasons}")
    check_exported_zips(stack, jobs, {s.study_uid: s.instances for s in studies})
    first_queued = min(job.times["queued"] for job in jobs)
    last_exported = max(job.times["exported"] for job in jobs)
    return PhaseResult(name, len(studies), instances, (last_exported - first_queued).total_seconds(),
                       stage_sums(jobs), memory.peaks_mb())


def wait_until_finished(settings: Settings, project: str, extract: str, total: int,
                        timeout: float, name: str) -> None:
    """Poll the database (not raw's REST API, whose answers would cost raw's plugin the
    time it is being measured on) until every job of the extract has ended."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        while True:
            finished = conn.execute(
                "SELECT count(*) FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
                " WHERE e.project_slug = %s AND e.extract_name = %s AND j.state = ANY(%s)",
                (project, extract, list(END_STATES)),
            ).fetchone()[0]
            if finished >= total:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {finished} of {total} studies done in {timeout:.0f} s")
            time.sleep(0.5)


@dataclass(frozen=True)
class JobTimes:
    job_id: int
    state: str
    last_error: str | None
    pseudo_study_uid: str | None
    times: dict[str, datetime.datetime]


def job_times(settings: Settings, project: str, extract: str) -> list[JobTimes]:
    with psycopg.connect(settings.pg_conninfo) as conn:
        rows = conn.execute(
            "SELECT j.id, j.state, j.last_error, j.pseudo_study_uid, j.state_times"
            " FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
            " WHERE e.project_slug = %s AND e.extract_name = %s ORDER BY j.id",
            (project, extract),
        ).fetchall()
    return [JobTimes(job_id, state, error, pseudo_uid,
                     {s: datetime.datetime.fromisoformat(t) for s, t in (times or {}).items()})
            for job_id, state, error, pseudo_uid, times in rows]


def stage_sums(jobs: list[JobTimes]) -> dict[str, float]:
    """Seconds between consecutive states, summed over the jobs; a state a job skipped
    (or that a later version of PIXL no longer has) joins its neighbours."""
    sums: dict[str, float] = {}
    for job in jobs:
        known = [s for s in STATE_ORDER if s in job.times]
        known += sorted((s for s in job.times if s not in STATE_ORDER), key=job.times.get)
        for before, after in itertools.pairwise(known):
            label = f"{before} -> {after}"
            sums[label] = sums.get(label, 0.0) + (job.times[after] - job.times[before]).total_seconds()
    return sums


def check_exported_zips(stack: Stack, jobs: list[JobTimes], expected: dict[str, int]) -> None:
    """Every job's zip is on the FTPS server with one DICOM file per instance of its study
    (told by the DICOM preamble, whatever the entries' names and any other file beside)."""
    counts = sorted(expected.values())
    found = []
    for job in jobs:
        path = stack.ftps_root / PROJECT / f"{job.pseudo_study_uid}.zip"
        if not path.is_file():
            raise RuntimeError(f"job {job.job_id} is exported but {path} is missing")
        with zipfile.ZipFile(path) as archive:
            found.append(sum(1 for entry in archive.infolist() if is_dicom(archive, entry)))
    if sorted(found) != counts:
        raise RuntimeError(f"the exported zips hold {sorted(found)} files, the studies {counts} instances")


def is_dicom(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bool:
    if entry.is_dir():
        return False
    with archive.open(entry) as member:
        return member.read(132)[128:] == b"DICM"


# --- the run -----------------------------------------------------------------------------------


def server_pids(stack: Stack, prefix: str):
    """The PIDs of the running servers whose process name is `prefix` or `prefix-...`."""
    def pids() -> list[int]:
        found = []
        for pid_file in stack.run_dir.glob("*.pid"):
            if pid_file.stem == prefix or pid_file.stem.startswith(prefix + "-"):
                pid = ManagedProcess(pid_file.stem, stack.run_dir, stack.log_dir).pid()
                if pid is not None:
                    found.append(pid)
        return found
    return pids


def peak_memory(stack: Stack) -> PeakMemory:
    return PeakMemory(
        single={"raw": server_pids(stack, "raw"), "anon": server_pids(stack, "anon"),
                "ftps": server_pids(stack, "ftps")},
        trees={"postgres": lambda: [pid] if (pid := stack.postgres.pid()) else []},
    )


def print_phase(result: PhaseResult) -> None:
    print(f"pipeline {result.name}: {result.studies} studies, {result.instances} instances in "
          f"{result.seconds:.1f} s = {result.per_second:.1f} instances/s")
    print("  seconds per stage, summed over the studies (mean per study):")
    for label, seconds in result.stage_seconds.items():
        print(f"    {label:28s} {seconds:8.1f}  ({seconds / result.studies:.1f})")
    print("  peak memory, MB: " + ", ".join(f"{k} {v:.0f}" for k, v in result.peaks_mb.items()))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10, help="N: studies of the first run (4N follow)")
    parser.add_argument("--instances-per-study", type=int, default=200)
    parser.add_argument("--series", type=int, default=4, help="series per study")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each image")
    parser.add_argument("--big-study", type=int, default=0, metavar="INSTANCES",
                        help="also send one study of this many instances; report its peak memory")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record py-spy profiles of raw and anon during the N run into DIR")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 and 4 studies of 4 instances of 64x64")
    parser.add_argument("--keep-state", action="store_true", help="keep the state folder (logs) at the end")
    args = parser.parse_args()
    if args.quick:
        args.studies, args.instances_per_study, args.series, args.size = 1, 4, 2, 64
    if args.studies < 1 or args.series < 1 or args.instances_per_study < args.series:
        parser.error("--studies and --series must be >= 1, --instances-per-study >= --series")
    if args.instances_per_study % args.series:
        parser.error("--instances-per-study must be a multiple of --series")
    return args


def main() -> int:
    args = arguments()
    # SIGTERM unwinds like Ctrl-C, so that every server is stopped by PID on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shape = Shape(args.instances_per_study, args.series, args.size)
    state = Path(tempfile.mkdtemp(prefix="pixl-bench-pipeline-"))
    port_base = free_port_base(extra_offsets=[o + d for o in CHAIN_PORT_OFFSETS.values() for d in (0, 200)])
    n = args.studies
    total_mb = (5 * n * shape.instances_per_study + args.big_study) * shape.size ** 2 * 2 / 1e6
    settings = private_stack_settings(
        state, write_project(state / "projects"), port_base,
        PIXL_MAX_TRANSFERS_IN_FLIGHT=str(IN_FLIGHT), PIXL_STUDIES_PER_SECOND=str(STUDIES_PER_SECOND),
        # a cache that holds the whole run: this measures throughput, not recycling
        ORTHANC_RAW_MAXIMUM_STORAGE_MB=str(max(10240, int(2 * total_mb))),
    )
    stack = Stack(settings)
    profiles = []
    succeeded = False
    try:
        stack.up()
        configure_destination(stack, settings)
        nodes = chain_nodes(settings, port_base)
        start_chain(stack, settings, nodes)
        client = RawClient(ClientConfig(settings.raw.url, *settings.orthanc_auth,
                                        ca_bundle=str(settings.tls_ca_bundle) if settings.tls_ca_bundle else None))
        client.set_controls(max_in_flight=IN_FLIGHT, studies_per_second=STUDIES_PER_SECOND)

        started = time.perf_counter()
        first = fill_vna(settings, shape, range(1000, 1000 + n), state / "generated")
        grown = fill_vna(settings, shape, range(2000, 2000 + 4 * n), state / "generated")
        big_shape = Shape(args.big_study, 1, args.size)
        big = fill_vna(settings, big_shape, range(3000, 3001), state / "generated") if args.big_study else []
        stored = sum(s.instances for s in first + grown + big)
        print(f"VNA filled with {stored} CT instances of {args.size}x{args.size} in "
              f"{time.perf_counter() - started:.0f} s (not timed); N = {n} studies of "
              f"{args.series} series x {args.instances_per_study // args.series}")

        instances = sum(s.instances for s in first)
        chain_s, hops = run_chain(settings, nodes, ftps_settings(stack), first)
        chain_per_s = instances / chain_s
        print(f"chain N: {n} studies, {instances} instances in {chain_s:.1f} s"
              f" = {chain_per_s:.1f} instances/s")
        for label, seconds in hops.items():
            print(f"    {label:28s} {seconds:8.1f}  ({seconds / n:.1f})")

        if args.profile:
            profiles = start_profiles({name: server_pids(stack, name)()[0] for name in ("raw", "anon")},
                                      args.profile)
        small = run_pipeline(stack, settings, client, first, "N", 1, peak_memory(stack))
        stop_profiles(profiles)
        print_phase(small)
        for profile in profiles:
            print(f"profile of {profile.name} ({profile.output}):")
            print("\n".join(summarise_profile(profile.output)))
        large = run_pipeline(stack, settings, client, grown, "4N", 2, peak_memory(stack))
        print_phase(large)
        big_result = None
        if big:
            big_result = run_pipeline(stack, settings, client, big, "big", 3, peak_memory(stack))
            print_phase(big_result)
        succeeded = True
    finally:
        # A second Ctrl-C (or SIGTERM) must not cut the stopping of the servers short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_profiles(profiles)
        stack.down()
        if succeeded and not args.keep_state:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"state (logs of every server) kept in {state}", file=sys.stderr)

    ratio = small.per_second / chain_per_s
    growth = large.seconds / small.seconds
    peaks = {k: max(small.peaks_mb[k], large.peaks_mb[k]) for k in small.peaks_mb}
    print(f"pipeline N: {small.per_second:.1f} instances/s; chain: {chain_per_s:.1f} instances/s; "
          f"ratio {ratio:.2f} (goal >= 0.7)")
    print(f"growth N -> 4N: {large.seconds:.1f} s / {small.seconds:.1f} s = {growth:.2f} (goal <= 4.4)")
    print("peak memory of N and 4N, MB: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
          + " (goal: raw and anon <= 300)")
    figures = {
        "studies": n, "instances_per_study": shape.instances_per_study, "size": shape.size,
        "instances": instances, "pipeline_s": f"{small.seconds:.2f}",
        "pipeline_per_s": f"{small.per_second:.1f}",
        "chain_s": f"{chain_s:.2f}", "chain_per_s": f"{chain_per_s:.1f}", "ratio": f"{ratio:.2f}",
        "pipeline_4n_s": f"{large.seconds:.2f}", "growth": f"{growth:.2f}",
        **{f"{k}_peak_rss_mb": f"{v:.0f}" for k, v in peaks.items()},
        "exported": small.studies + large.studies,
    }
    if big_result:
        figures.update({"big_study_instances": big_result.instances,
                        "big_study_s": f"{big_result.seconds:.2f}",
                        **{f"big_{k}_peak_rss_mb": f"{v:.0f}" for k, v in big_result.peaks_mb.items()}})
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
