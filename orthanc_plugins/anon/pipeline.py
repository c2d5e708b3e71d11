"""anon's work: de-identify the studies raw handed over, then send them to their destination.

A job handed over by raw is in state `anonymising`. A worker claims it (with
a lease, kept alive by a `LeaseKeeper` while it works, so a dead worker's job
is taken back and a live one's never is), reads the study's instances from
the raw Orthanc that holds it a few at a time ahead of the de-identification
(`fetching`), de-identifies each one and writes what is kept straight into
the study's staged zip on disk (`staging`) while a copy goes to anon's
Orthanc for the web UI (`copies`). Study-level rules are applied, pseudonyms
and id maps recorded: the job becomes `exporting`, held by this anon server
(`anon_node`), whose disk has the zip. The export sends the zip through the
project's destination hook, once per study however many extracts name it
(`exports`); only once the destination confirmed does the job become
`exported`. Every step can be done again (the engine is deterministic,
destinations are idempotent), so a crash at any point is repaired by
repeating the step.

Several workers per anon server (`anon_workers`) and any number of anon
servers share the queue: while one worker exports a study, another
de-identifies the next.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from orthanc_plugins.anon import copies
from orthanc_plugins.anon.deid.engine import (
    CompiledProject,
    CompiledProjects,
    deidentify_instance,
)
from orthanc_plugins.anon.deid.filters import series_below_minimum
from orthanc_plugins.anon.deid.id_map import record_id_map
from orthanc_plugins.anon.exports import ExportTurn, finish_export, take_export_turn
from orthanc_plugins.anon.fetching import prefetch_instances
from orthanc_plugins.anon.lifecycle import notify_study_exported
from orthanc_plugins.anon.practice import end_practice_job, is_practice_job
from orthanc_plugins.anon.staging import StagedStudy
from orthanc_plugins.common.failures import classify
from orthanc_plugins.common.job_queue import (
    RetryPolicy,
    claim_job,
    move_job,
    release_job,
    schedule_retry,
)
from orthanc_plugins.common.leases import LeaseKeeper, LeaseLost
from orthanc_plugins.common.orthanc_api import HttpOrthanc, OrthancApi, OrthancError, get_json
from orthanc_plugins.common.secrets import SecretStore, project_key
from orthanc_plugins.common.settings import Settings
from pixl_hooks.plugins import export_dicom_study
from pixl_hooks.types import ExportableStudy

logger = logging.getLogger(__name__)

# An export of a study that another job is exporting is tried again after this long.
BUSY_EXPORT_DELAY_SECONDS = 5.0
# An exporting job whose zip is on another anon server is left to that server
# for this long past its due time before this one de-identifies it again.
ORPHANED_EXPORT_SECONDS = 600.0


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
    anon_node: str | None


@dataclass
class StudyOutcome:
    """What became of one study's instances."""

    kept: int
    dropped: Counter
    quarantined: Counter
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None
    anon_study_ids: set[str] = field(default_factory=set)


class RawCopyGone(Exception):
    """raw no longer holds the study (deleted, or recycled after a failure): fetch it again."""


class StudyAnonymiser:
    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        owner: str,
        connect: Callable[[], psycopg.Connection],
        *,
        raw_client: Callable[[str], OrthancApi] | None = None,
        anon_client: Callable[[], OrthancApi] | None = None,
        beat: Callable[[], None] = lambda: None,
    ):
        self.settings = settings
        self.secrets = secrets
        self.owner = owner
        self.node = settings.anon.url
        self.staging_dir = settings.state_dir / "anon-staging" / f"{settings.anon.name}-{settings.anon.http_port}"
        self.policy = RetryPolicy.from_settings(settings)
        self._connect = connect
        self._beat = beat
        self._raw_client = raw_client or (
            lambda url: HttpOrthanc(url, settings.orthanc_auth, verify=settings.http_verify))
        self._anon_client = anon_client or (
            lambda: HttpOrthanc(settings.anon.local_url, settings.orthanc_auth, verify=settings.http_verify))
        self._projects = CompiledProjects(settings.projects_dir, settings.tag_rules_dir)

    # -- the loop's one step --------------------------------------------------

    def run_once(self, conn: psycopg.Connection) -> bool:
        """Do one step of one job; False when there was nothing to do.

        Exports come first (they free raw's cache and anon's disk), this
        server's own first: the zip is on its disk.
        """
        lease = self.settings.job_lease_seconds
        job = claim_job(
            conn, ("exporting",), "exporting", self.owner, lease, AnonJob,
            max_crashes=self.policy.max_crashes,
            where="j.anon_node IS NULL OR j.anon_node = %(node)s"
                  " OR j.next_attempt_at < clock_timestamp() - make_interval(secs => %(orphaned)s)",
            params={"node": self.node, "orphaned": ORPHANED_EXPORT_SECONDS},
        )
        if job is not None:
            self._with_lease(conn, job, self.export)
            return True
        job = claim_job(conn, ("anonymising",), "anonymising", self.owner, lease, AnonJob,
                        max_crashes=self.policy.max_crashes)
        if job is not None:
            self._with_lease(conn, job, self.anonymise)
            return True
        return False

    def _with_lease(self, conn: psycopg.Connection, job: AnonJob,
                    step: Callable[[psycopg.Connection, AnonJob, LeaseKeeper], None]) -> None:
        try:
            with LeaseKeeper(self._connect, job.id, self.owner, self.settings.job_lease_seconds,
                             self._beat) as keeper:
                step(conn, job, keeper)
        except LeaseLost:
            logger.warning("job %s: lease lost while %s; another worker has it", job.id, job.state)

    def _fail(self, conn: psycopg.Connection, job: AnonJob, exc: Exception, state: str) -> None:
        failure = classify(exc)
        if failure.terminal:
            move_job(conn, job.id, self.owner, "failed", last_error=failure.reason[:500])
            new_state: str | None = "failed"
        else:
            new_state = schedule_retry(conn, job.id, self.owner, failure.reason, self.policy,
                                       state=state, outage=failure.outage)
        logger.warning("job %s: %s failed: %s (%s); now %s", job.id, job.state, failure.reason,
                       "outage" if failure.outage else "attempt failed", new_state or "held elsewhere")

    def project(self, slug: str) -> CompiledProject:
        """The project's rules as they are on disk now (an edited file takes effect
        for the next study, without restarting anon)."""
        return self._projects.get(slug)

    # -- de-identification ----------------------------------------------------

    def anonymise(self, conn: psycopg.Connection, job: AnonJob, keeper: LeaseKeeper) -> None:
        staged = StagedStudy(self.staging_dir, job.id)
        try:
            outcome = self.deidentify_study(conn, job, staged, keeper)
        except LeaseLost:
            staged.discard()
            raise
        except RawCopyGone:
            staged.discard()
            move_job(conn, job.id, self.owner, "queued",
                     last_error="raw no longer held the study; fetching it again")
            logger.warning("job %s: raw no longer holds the study; sent back to raw", job.id)
            return
        except Exception as exc:
            staged.discard()
            self._fail(conn, job, exc, "anonymising")
            return
        if outcome.kept == 0:
            staged.discard()
            reasons = sorted({*outcome.dropped, *outcome.quarantined})
            move_job(conn, job.id, self.owner, "skipped",
                     last_error=("no instance kept: " + "; ".join(reasons))[:500])
            logger.info("job %s: no instance kept, skipped", job.id)
            return
        keeper.check()
        if move_job(conn, job.id, self.owner, "exporting", anon_node=self.node,
                    pseudo_patient_id=outcome.pseudo_patient_id,
                    pseudo_study_uid=outcome.pseudo_study_uid, last_error=None):
            logger.info("job %s: study %s de-identified (%s instances kept)",
                        job.id, outcome.pseudo_study_uid, outcome.kept)

    def deidentify_study(self, conn: psycopg.Connection, job: AnonJob, staged: StagedStudy,
                         keeper: LeaseKeeper) -> StudyOutcome:
        project = self.project(job.project_slug)
        key = project_key(self.secrets, job.project_slug).encode()
        raw_url = job.raw_node or self.settings.raw.url
        instance_ids = self._wanted_instances(self._raw_client(raw_url), job)
        dropped: Counter = Counter()
        quarantined: Counter = Counter()
        pairs = []
        pseudo_patient_id = pseudo_study_uid = None
        staged.open_for_writing()
        with copies.CopyWriter(self._anon_client(), enabled=self.settings.anon_keep_hours > 0) as copy:
            try:
                for _, data in prefetch_instances(lambda: self._raw_client(raw_url), instance_ids):
                    keeper.check()
                    result = deidentify_instance(data, project, key)
                    if result.status == "kept":
                        staged.add(result.series_uid, result.sop_instance_uid, result.data or b"")
                        copy.add(result.series_uid, result.data or b"")
                        pairs.extend(result.id_pairs)
                        pseudo_patient_id, pseudo_study_uid = result.pseudo_patient_id, result.study_uid
                    elif result.status == "quarantined":
                        quarantined[result.reason or "quarantined"] += 1
                    else:
                        dropped[result.reason or "dropped"] += 1
            except OrthancError as exc:
                if exc.status == 404:
                    raise RawCopyGone() from None
                raise

        minimum = project.config.min_instances_per_series
        counts = Counter({s: len(names) for s, names in staged.names_by_series.items()})
        too_small = series_below_minimum(counts, minimum)
        if too_small:
            for series_uid in too_small:
                dropped[f"series below min_instances_per_series ({minimum})"] += counts[series_uid]
            staged.drop_series(too_small)
            copy.delete_series(set(too_small))
            kept_sops = {name.rsplit("/", 1)[-1].removesuffix(".dcm")
                         for names in staged.names_by_series.values() for name in names}
            pairs = [p for p in pairs if p.kind != "sop_instance_uid" or p.id_new in kept_sops]
        kept = staged.instance_count
        if kept:
            staged.publish()
        keeper.check()
        with conn.transaction():
            record_id_map(conn, job.project_slug, pairs)
            record_outcomes(conn, job.id, kept, dropped, quarantined)
            if kept:
                copies.record_copies(conn, self.node, job.id, copy.study_ids)
        return StudyOutcome(
            kept=kept, dropped=dropped, quarantined=quarantined,
            pseudo_patient_id=pseudo_patient_id if kept else None,
            pseudo_study_uid=pseudo_study_uid if kept else None,
            anon_study_ids=copy.study_ids,
        )

    def _wanted_instances(self, raw: OrthancApi, job: AnonJob) -> list[str]:
        """The raw instances of the job's study, only the requested series if it names any."""
        try:
            series = get_json(raw, f"/studies/{job.raw_study_id}/series")
        except OrthancError as exc:
            if exc.status == 404:
                raise RawCopyGone() from None
            raise
        wanted = set(job.series_uids)
        return [
            instance_id
            for one in series
            if not wanted or one["MainDicomTags"].get("SeriesInstanceUID") in wanted
            for instance_id in one["Instances"]
        ]

    # -- dispatch ---------------------------------------------------------------

    def export(self, conn: psycopg.Connection, job: AnonJob, keeper: LeaseKeeper) -> None:
        staged = StagedStudy(self.staging_dir, job.id)
        if not staged.exists():
            # On another anon's disk (that server is gone) or lost: de-identify it again from raw.
            logger.warning("job %s: the staged study %s is not on this anon; de-identifying it again",
                           job.id, job.pseudo_study_uid)
            move_job(conn, job.id, self.owner, "anonymising", anon_node=self.node)
            return
        if is_practice_job(conn, job.id):  # nothing leaves, nothing stays (anon/practice.py)
            end_practice_job(conn, job, self.owner, staged, self._anon_client(), self.node)
            return
        project = self.project(job.project_slug).config
        pseudo_study_uid = job.pseudo_study_uid or ""
        turn = take_export_turn(conn, job.id, job.project_slug, pseudo_study_uid, job.series_uids)
        if turn is ExportTurn.BUSY:
            release_job(conn, job.id, self.owner, "exporting", BUSY_EXPORT_DELAY_SECONDS)
            return
        if turn is ExportTurn.DONE:
            logger.info("job %s: study %s was exported for another extract; not sent again",
                        job.id, pseudo_study_uid)
            self._exported(conn, job, staged)
            return
        study = ExportableStudy(job.pseudo_patient_id or "", pseudo_study_uid, staged.path)
        try:
            keeper.check()
            receipt = export_dicom_study(project, study, self.secrets)
        except Exception as exc:
            self._fail(conn, job, exc, "exporting")
            return
        keeper.check()
        with conn.transaction():
            finish_export(conn, job.id, job.project_slug, pseudo_study_uid, job.series_uids,
                          receipt.destination, receipt.location, receipt.files)
            self._exported(conn, job, staged)
        notify_study_exported(conn, project, job, receipt, self.secrets)
        logger.info("job %s: study %s exported to %s (%s)", job.id, pseudo_study_uid,
                    receipt.destination, receipt.location)

    def _exported(self, conn: psycopg.Connection, job: AnonJob, staged: StagedStudy) -> None:
        if move_job(conn, job.id, self.owner, "exported", last_error=None):
            copies.mark_exported(conn, job.id)
            staged.discard()


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
