"""anon's work: de-identify the studies raw handed over, then send them to their destination.

A job handed over by raw is in state `anonymising`. The worker claims it
(with a lease, like raw's claims, so a dead worker's job is taken back),
fetches each instance from the raw Orthanc that holds it, runs the
de-identification engine, stores what is kept in anon's Orthanc, applies the
study-level rules and records pseudonyms and id maps: the job becomes
`exporting`. Then it sends the de-identified study through the project's
destination hook and only once the destination confirmed does the job become
`exported`. Both steps are idempotent (the engine is deterministic and
anon overwrites instances), so a crash at any point is repaired by doing the
step again.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from orthanc_plugins.anon.deid.engine import (
    CompiledProject,
    deidentify_instance,
    load_compiled_project,
)
from orthanc_plugins.anon.deid.filters import series_below_minimum
from orthanc_plugins.anon.deid.id_map import record_id_map
from orthanc_plugins.anon.practice import end_practice_job, is_practice_job
from orthanc_plugins.common.job_queue import claim_job, move_job, renew_lease, schedule_retry
from orthanc_plugins.common.orthanc_api import HttpOrthanc, OrthancApi, find_study, get_json
from orthanc_plugins.common.secrets import SecretStore, project_key
from orthanc_plugins.common.settings import Settings
from pixl_hooks.plugins import export_dicom_study
from pixl_hooks.types import DestinationError, ExportableStudy

logger = logging.getLogger(__name__)

# The lease is renewed every this many instances while a study is de-identified.
RENEW_EVERY_INSTANCES = 25


@dataclass
class AnonJob:
    id: int
    project_slug: str
    state: str
    attempts: int
    series_uids: list[str]
    raw_node: str | None
    raw_study_id: str | None
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None


@dataclass(frozen=True)
class KeptInstance:
    """What anon remembers of an instance it stored, while it finishes the study."""

    anon_id: str
    series_uid: str
    sop_instance_uid: str
    pseudo_patient_id: str
    pseudo_study_uid: str


@dataclass
class StudyOutcome:
    """What became of one study's instances."""

    kept: int
    dropped: Counter
    quarantined: Counter
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None


class StudyAnonymiser:
    def __init__(
        self,
        settings: Settings,
        anon: OrthancApi,
        secrets: SecretStore,
        owner: str,
        raw_client: Callable[[str], OrthancApi] | None = None,
    ):
        self.settings = settings
        self.anon = anon
        self.secrets = secrets
        self.owner = owner
        self._raw_client = raw_client or (lambda url: HttpOrthanc(url, settings.orthanc_auth))
        self._projects: dict[str, CompiledProject] = {}

    # -- the loop's one step --------------------------------------------------

    def run_once(self, conn: psycopg.Connection) -> bool:
        """Do one step of one job; False when there was nothing to do."""
        for state, step in (("exporting", self.export), ("anonymising", self.anonymise)):
            job = claim_job(conn, (state,), state, self.owner, self.settings.job_lease_seconds, AnonJob)
            if job is not None:
                step(conn, job)
                return True
        return False

    def _retry(self, conn: psycopg.Connection, job: AnonJob, error: str, state: str) -> None:
        schedule_retry(conn, job, self.owner, error, base=self.settings.retry_base_seconds,
                       cap=self.settings.retry_max_seconds,
                       max_attempts=self.settings.max_attempts, state=state)

    def project(self, slug: str) -> CompiledProject:
        if slug not in self._projects:
            self._projects[slug] = load_compiled_project(
                slug, self.settings.projects_dir, self.settings.tag_rules_dir
            )
        return self._projects[slug]

    # -- de-identification ----------------------------------------------------

    def anonymise(self, conn: psycopg.Connection, job: AnonJob) -> None:
        try:
            outcome = self.deidentify_study(conn, job)
        except Exception as exc:
            # Raw unreachable, anon's storage failing, a broken project file:
            # all worth another try later; the message names no patient.
            logger.warning("job %s: de-identification failed: %s", job.id, _describe(exc))
            self._retry(conn, job, f"de-identification failed: {_describe(exc)}", "anonymising")
            return
        if outcome.kept == 0:
            reasons = sorted({*outcome.dropped, *outcome.quarantined})
            move_job(conn, job.id, self.owner, "skipped",
                     last_error=("no instance kept: " + "; ".join(reasons))[:500])
            logger.info("job %s: no instance kept, skipped", job.id)
            return
        move_job(conn, job.id, self.owner, "exporting",
                 pseudo_patient_id=outcome.pseudo_patient_id,
                 pseudo_study_uid=outcome.pseudo_study_uid)
        logger.info("job %s: study %s de-identified (%s instances kept)",
                    job.id, outcome.pseudo_study_uid, outcome.kept)

    def deidentify_study(self, conn: psycopg.Connection, job: AnonJob) -> StudyOutcome:
        project = self.project(job.project_slug)
        key = project_key(self.secrets, job.project_slug).encode()
        raw = self._raw_client(job.raw_node or self.settings.raw.url)
        kept: list[KeptInstance] = []
        dropped: Counter = Counter()
        quarantined: Counter = Counter()
        pairs = []
        for count, instance_id in enumerate(self._wanted_instances(raw, job), start=1):
            if count % RENEW_EVERY_INSTANCES == 0:
                renew_lease(conn, job.id, self.owner, self.settings.job_lease_seconds)
            result = deidentify_instance(raw.get(f"/instances/{instance_id}/file"), project, key)
            if result.status == "kept":
                stored = json.loads(self.anon.post("/instances", result.data or b""))
                kept.append(KeptInstance(stored["ID"], result.series_uid, result.sop_instance_uid,
                                         result.pseudo_patient_id, result.study_uid))
                pairs.extend(result.id_pairs)
            elif result.status == "quarantined":
                quarantined[result.reason or "quarantined"] += 1
            else:
                dropped[result.reason or "dropped"] += 1

        minimum = project.config.min_instances_per_series
        too_small = series_below_minimum(Counter(k.series_uid for k in kept), minimum)
        if too_small:
            for instance in kept:
                if instance.series_uid in too_small:
                    self.anon.delete(f"/instances/{instance.anon_id}")
                    dropped[f"series below min_instances_per_series ({minimum})"] += 1
            kept = [k for k in kept if k.series_uid not in too_small]
            kept_sops = {k.sop_instance_uid for k in kept}
            pairs = [p for p in pairs if p.kind != "sop_instance_uid" or p.id_new in kept_sops]

        with conn.transaction():
            record_id_map(conn, job.project_slug, pairs)
            record_outcomes(conn, job.id, len(kept), dropped, quarantined)
        return StudyOutcome(
            kept=len(kept), dropped=dropped, quarantined=quarantined,
            pseudo_patient_id=kept[0].pseudo_patient_id if kept else None,
            pseudo_study_uid=kept[0].pseudo_study_uid if kept else None,
        )

    def _wanted_instances(self, raw: OrthancApi, job: AnonJob) -> list[str]:
        """The raw instances of the job's study, only the requested series if it names any."""
        series = get_json(raw, f"/studies/{job.raw_study_id}/series")
        wanted = set(job.series_uids)
        return [
            instance_id
            for one in series
            if not wanted or one["MainDicomTags"].get("SeriesInstanceUID") in wanted
            for instance_id in one["Instances"]
        ]

    # -- dispatch ---------------------------------------------------------------

    def export(self, conn: psycopg.Connection, job: AnonJob) -> None:
        if is_practice_job(conn, job.id):  # nothing leaves, nothing stays (anon/practice.py)
            end_practice_job(conn, self.anon, job, self.owner)
            return
        project = self.project(job.project_slug).config
        try:
            with tempfile.TemporaryDirectory(prefix="pixl-export-") as folder:
                study = self.exportable_study(job, Path(folder))
                if study is None:
                    # De-identify it again from raw: deterministic, so the same study comes back.
                    logger.warning("job %s: study %s is gone from anon; de-identifying it again",
                                   job.id, job.pseudo_study_uid)
                    move_job(conn, job.id, self.owner, "anonymising")
                    return
                receipt = export_dicom_study(project, study, self.secrets)
        except DestinationError as exc:
            logger.warning("job %s: export of %s failed: %s", job.id, job.pseudo_study_uid, exc)
            if exc.retryable:
                self._retry(conn, job, str(exc), "exporting")
            else:
                move_job(conn, job.id, self.owner, "failed", last_error=str(exc)[:500])
            return
        move_job(conn, job.id, self.owner, "exported", last_error=None)
        logger.info("job %s: study %s exported to %s (%s)", job.id, job.pseudo_study_uid,
                    receipt.destination, receipt.location)

    def exportable_study(self, job: AnonJob, folder: Path) -> ExportableStudy | None:
        """The study's zip, or None if anon no longer holds it (recycled, deleted)."""
        study_id = find_study(self.anon, job.pseudo_study_uid or "")
        if study_id is None:
            return None
        zip_path = folder / f"{job.pseudo_study_uid}.zip"
        zip_path.write_bytes(self.anon.get(f"/studies/{study_id}/archive"))
        return ExportableStudy(job.pseudo_patient_id or "", job.pseudo_study_uid or "", zip_path)


def record_outcomes(conn: psycopg.Connection, job_id: int, kept: int,
                    dropped: Counter, quarantined: Counter) -> None:
    conn.execute("DELETE FROM anon_outcomes WHERE job_id = %s", (job_id,))
    rows = [(job_id, "kept", "", kept)] if kept else []
    rows += [(job_id, "dropped", reason[:500], n) for reason, n in dropped.items()]
    rows += [(job_id, "quarantined", reason[:500], n) for reason, n in quarantined.items()]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO anon_outcomes (job_id, outcome, reason, instances) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (job_id, outcome, reason) DO UPDATE SET instances = anon_outcomes.instances"
            " + EXCLUDED.instances",
            rows,
        )


def _describe(exc: Exception) -> str:
    # PIXL's own exceptions carry no identifying values; others are named by type only.
    own = exc.__class__.__module__.split(".")[0] in ("orthanc_plugins", "pixl_hooks")
    return str(exc)[:300] if own else type(exc).__name__
