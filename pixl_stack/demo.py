"""`make demo`: the whole PIXL pipeline on generated studies, end to end.

It brings the native stack up, fills the development VNA with generated
studies, loads two extracts through raw's REST API (an OMOP ES extract for
project `demo`, exported to the local FTPS server, and a CSV cohort for
`demo-dicomweb`, exported to the local DICOMweb server), waits for every job
to end, runs the parquet export, and prints what went where and what was
filtered and why. Running it again exports nothing twice.
"""

from __future__ import annotations

import csv
import datetime
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from orthanc_plugins.common import db
from orthanc_plugins.common.secrets import SecretStore, destination_secret_name, open_secret_store
from orthanc_plugins.common.settings import Settings, load_env_file, load_settings
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.omop import Procedure, write_omop_extract
from pixl_stack.stack import Stack
from tui.client import ClientConfig, ExtractStatus, ExtractUpload, RawClient, prepare_upload

OMOP_PROJECT = "demo"
CSV_PROJECT = "demo-dicomweb"
EXTRACT_TIME = datetime.datetime(2026, 11, 1, 9, 0, 0)
WAIT_SECONDS = 600


@dataclass(frozen=True)
class DemoStudy:
    """One study of the demo cohort and why it is there."""

    spec: studygen.StudySpec
    purpose: str
    in_vna: bool = True


DEMO_STUDIES = (
    DemoStudy(studygen.StudySpec(modality="CT", seed=101), "CT, exported"),
    DemoStudy(studygen.StudySpec(modality="MR", seed=102), "MR, exported"),
    DemoStudy(studygen.StudySpec(modality="DX", seed=103, series=1), "DX, exported"),
    DemoStudy(studygen.StudySpec(modality="US", seed=104, series=1), "US, regions masked"),
    DemoStudy(studygen.StudySpec(modality="CT", seed=105,
                                 series_descriptions=("Scout", "Axial 5mm")),
              "CT whose scout series is dropped"),
    DemoStudy(studygen.StudySpec(modality="DX", seed=106, series=1, burned_in=True),
              "DX with burned-in text: quarantined"),
    DemoStudy(studygen.StudySpec(modality="CT", seed=107), "not in the VNA: not_found",
              in_vna=False),
)
# Indexes of DEMO_STUDIES that the CSV project asks for too.
CSV_STUDIES = (0, 1, 3)


@dataclass
class DemoCohort:
    studies: list[studygen.GeneratedStudy] = field(default_factory=list)


def build_cohort(folder: Path) -> DemoCohort:
    """Generate the demo studies (deterministic: the same every run)."""
    return DemoCohort([
        studygen.write_generated_study(demo.spec, studygen.make_patient(demo.spec.seed),
                                       folder / f"study-{index:02d}")
        for index, demo in enumerate(DEMO_STUDIES)
    ])


def write_extracts(cohort: DemoCohort, folder: Path) -> tuple[Path, Path]:
    procedures = [
        Procedure(index + 1, s.patient.mrn, s.accession, s.study_uid, s.study_date)
        for index, s in enumerate(cohort.studies)
    ]
    omop = write_omop_extract(folder / "omop-extract", OMOP_PROJECT, EXTRACT_TIME, procedures)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["procedure_id", "mrn", "accession_number", "project_name",
                     "extract_generated_timestamp", "study_date", "study_uid", "participant_id"])
    for index in CSV_STUDIES:
        study = cohort.studies[index]
        writer.writerow([index + 1, study.patient.mrn, study.accession, CSV_PROJECT,
                         EXTRACT_TIME.strftime("%Y-%m-%dT%H:%M:%SZ"), study.study_date.isoformat(),
                         study.study_uid, ""])
    cohort_csv = folder / "demo-dicomweb-cohort.csv"
    cohort_csv.write_text(buffer.getvalue())
    return omop, cohort_csv


def configure_destinations(stack: Stack, secrets: SecretStore) -> None:
    """Point the demo projects at the stack's own FTPS and DICOMweb servers."""
    services = stack.development_destination_settings()
    for project, service in ((OMOP_PROJECT, "ftp"), (CSV_PROJECT, "dicomweb")):
        for name, value in services[service].items():
            secrets.set(destination_secret_name(project, service, name), value)


def load(client: RawClient, upload: ExtractUpload, say) -> str:
    preview = client.load_extract(upload, dry_run=True)
    say(f"  {upload.filename}: project {preview.project}, extract {preview.extract}, "
        f"{preview.studies} studies, modalities {', '.join(preview.modalities) or '-'}, "
        f"destination {preview.destination}")
    loaded = client.load_extract(upload, dry_run=False)
    if loaded.queued or loaded.already_exported:
        say(f"  queued {loaded.queued} new studies ({loaded.already_exported} already exported)")
    else:
        say("  queued 0 new studies: this extract was loaded before, nothing is added")
    return f"{loaded.project}/{loaded.extract}"


def wait_for(client: RawClient, keys: set[str], say, timeout: float = WAIT_SECONDS) -> list[ExtractStatus]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        statuses = [s for s in client.extracts() if s.key in keys]
        line = "; ".join(f"{s.key}: {s.finished}/{s.total} done" for s in statuses)
        if line != last:
            say(f"  {line}")
            last = line
        if statuses and all(s.done for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo extracts did not finish within {timeout:.0f} s")
        time.sleep(1)


def run_parquet_export(client: RawClient, project: str, extract: str, say) -> None:
    done = [e for e in client.exports(project, extract) if e.state == "done"]
    if done:
        say(f"  already exported to {done[-1].uploaded_to or done[-1].export_dir}; not again")
        return
    client.start_export(project, extract)
    deadline = time.monotonic() + 120
    while True:
        latest = client.exports(project, extract)[-1]
        if latest.state != "running":
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the parquet export did not finish")
        time.sleep(0.5)
    if latest.state != "done":
        raise RuntimeError(f"the parquet export failed: {latest.error}")
    say(f"  written to {latest.export_dir}")
    say(f"  uploaded through {latest.destination} to {latest.uploaded_to}")


def filtered_reasons(settings: Settings) -> list[tuple[str, str, str, int]]:
    """(project, outcome, reason, instances) of everything anon did not keep."""
    with db.connect(settings) as conn:
        return conn.execute(
            "SELECT j.project_slug, o.outcome, o.reason, sum(o.instances)::int"
            " FROM anon_outcomes o JOIN study_jobs j ON j.id = o.job_id"
            " WHERE o.outcome <> 'kept' AND j.project_slug IN (%s, %s)"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (OMOP_PROJECT, CSV_PROJECT),
        ).fetchall()


def dicomweb_studies(settings: Settings) -> int:
    response = requests.get(settings.dicomweb_destination.url + "/dicom-web/studies",
                            auth=settings.orthanc_auth, timeout=30)
    response.raise_for_status()
    return len(response.json()) if response.content.strip() else 0


def run_demo(settings: Settings, say=print) -> list[ExtractStatus]:
    stack = Stack(settings)
    say("1. starting the native stack (PostgreSQL, VNA, raw, anon, DICOMweb, FTPS)")
    stack.up()
    work = settings.state_dir / "demo"
    configure_destinations(stack, open_secret_store(settings))

    say("2. generating studies and storing them into the development VNA")
    cohort = build_cohort(work / "studies")
    for demo, study in zip(DEMO_STUDIES, cohort.studies, strict=True):
        if demo.in_vna:
            storescu(study.files, settings.vna)
        say(f"  {study.modality} study, {study.instance_count} instances: {demo.purpose}")

    say("3. loading the extracts through raw's REST API")
    omop_folder, cohort_csv = write_extracts(cohort, work)
    client = RawClient(ClientConfig(settings.raw.url, *settings.orthanc_auth,
                                    ca_bundle=str(settings.tls_ca_bundle) if settings.tls_ca_bundle else None))
    keys = {load(client, prepare_upload(omop_folder), say),
            load(client, prepare_upload(cohort_csv), say)}

    say("4. raw fetches (C-FIND, C-MOVE), anon de-identifies and exports")
    statuses = wait_for(client, keys, say)

    say("5. parquet export of the OMOP extract")
    omop = next(s for s in statuses if s.project == OMOP_PROJECT)
    run_parquet_export(client, omop.project, omop.extract, say)

    say("\nSummary")
    for status in statuses:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(status.counts.items()))
        say(f"  {status.key}: {counts}")
    zips = sorted((stack.ftps_root / OMOP_PROJECT).glob("*.zip"))
    say(f"  FTPS   {stack.ftps_root / OMOP_PROJECT}: {len(zips)} study zips")
    say(f"  DICOMweb {settings.dicomweb_destination.url}/dicom-web: {dicomweb_studies(settings)} studies")
    say("  filtered by anon (instances):")
    for project, outcome, reason, instances in filtered_reasons(settings):
        say(f"    {project}: {instances} {outcome}: {reason}")
    say(f"\nWeb UIs (user {settings.orthanc_username}): raw {settings.raw.url}/app/explorer.html,"
        f" anon {settings.anon.url}/app/explorer.html. Stop everything with: .venv/bin/pixl-stack down")
    return statuses


def main() -> int:
    load_env_file()
    try:
        run_demo(load_settings())
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
