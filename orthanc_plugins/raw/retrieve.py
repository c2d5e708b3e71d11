"""Fetching a requested study from the archive into raw, cache first.

Everything goes through raw's own REST API (an `OrthancApi`): C-FIND with
`POST /modalities/{vna}/query`, C-MOVE with `POST /queries/{id}/retrieve`
as an asynchronous job polled with `time.sleep` (inside Orthanc a
synchronous move would hold the plugin lock and deadlock raw's own
callbacks; `/modalities/{id}/move` ignores "Asynchronous" in Orthanc 1.10).

Cache: `raw_cached_studies` remembers how many instances the archive had for
a study (or series) when raw fetched it. If raw still holds that many, the
study is served without any traffic to the archive. If raw holds part of it,
only the missing instances are moved.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from orthanc_plugins.common.orthanc_api import OrthancApi, OrthancError, get_json, post_json
from orthanc_plugins.raw.queue import StudyJob

logger = logging.getLogger(__name__)

# A C-MOVE of many instances by SOP Instance UID list is sent in chunks of this many.
MISSING_INSTANCES_PER_MOVE = 200
# How many times a short transfer is completed within one attempt.
SHORT_TRANSFER_ROUNDS = 2


class RetrieveError(RuntimeError):
    """A retryable failure (archive down, move failed or short). No identifying values.

    `outage`: the archive could not be reached (nothing is wrong with the study).
    """

    def __init__(self, message: str, *, outage: bool = False):
        super().__init__(message)
        self.outage = outage


class StudyNotFound(RuntimeError):
    """No archive holds the study: a terminal state."""


class AmbiguousStudy(RuntimeError):
    """The request matches several studies: a terminal failure an operator must look at."""


@dataclass(frozen=True)
class RetrieveSettings:
    modalities: tuple[str, ...]  # primary archive first, then the optional secondary
    raw_aet: str
    raw_node: str  # which raw holds the cache (its base URL)
    move_timeout_seconds: float
    max_storage_mb: int = 0  # raw's MaximumStorageSize (0: unlimited)
    poll_seconds: float = 0.2


@dataclass(frozen=True)
class Retrieved:
    raw_study_id: str
    from_cache: bool  # True: the archive was not contacted at all
    moved_instances: int


def retrieve_study(
    api: OrthancApi,
    conn: psycopg.Connection,
    job: StudyJob,
    config: RetrieveSettings,
    *,
    on_transfer_start: Callable[[int], None] = lambda instances: None,
    check_lease: Callable[[], None] = lambda: None,
) -> Retrieved:
    """Make the job's study (or series) complete in raw.

    `on_transfer_start(instances)` is called before the first C-MOVE with the
    number of instances the archive announced (it reserves room in the cache
    and may refuse with `cache_hold.CacheFull`; the job becomes 'retrieving');
    `check_lease` between every step and on every poll (it raises
    `LeaseLost` when another worker holds the job: the C-MOVE is cancelled).
    """
    cached = _complete_in_raw(api, conn, job, config.raw_node)
    if cached is not None:
        return Retrieved(cached, from_cache=True, moved_instances=0)
    for modality in config.modalities:
        check_lease()
        found = _find_study(api, modality, job)
        if found is None:
            continue
        return _fetch(api, conn, job, config, modality, found, on_transfer_start, check_lease)
    raise StudyNotFound(f"no archive ({', '.join(config.modalities)}) holds the study")


# --- what raw holds -------------------------------------------------------------


def _find_in_raw(api: OrthancApi, level: str, query: dict[str, str]) -> list[str]:
    return post_json(api, "/tools/find", {"Level": level, "Query": query})


def raw_study_id_for(api: OrthancApi, study_uid: str) -> str | None:
    ids = _find_in_raw(api, "Study", {"StudyInstanceUID": study_uid})
    return ids[0] if ids else None


def raw_instance_count(api: OrthancApi, study_uid: str, series_uid: str = "") -> int:
    if series_uid:
        ids = _find_in_raw(api, "Series", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
        return sum(len(get_json(api, f"/series/{i}")["Instances"]) for i in ids)
    study_id = raw_study_id_for(api, study_uid)
    return 0 if study_id is None else int(get_json(api, f"/studies/{study_id}/statistics")["CountInstances"])


def _raw_sop_uids(api: OrthancApi, study_uid: str, series_uids: list[str]) -> set[str]:
    query = {"StudyInstanceUID": study_uid}
    scopes = [dict(query, SeriesInstanceUID=s) for s in series_uids] or [query]
    uids: set[str] = set()
    for scope in scopes:
        for instance in post_json(api, "/tools/find", {"Level": "Instance", "Query": scope, "Expand": True}):
            uids.add(instance["MainDicomTags"]["SOPInstanceUID"])
    return uids


def _units(job: StudyJob) -> list[str]:
    """What completeness is tracked by: the whole study ('') or each requested series."""
    return list(job.series_uids) or [""]


def _complete_in_raw(api: OrthancApi, conn: psycopg.Connection, job: StudyJob, raw_node: str) -> str | None:
    """raw's study ID if raw holds everything the job asks for, by the cache record; else None."""
    study_uid = job.study_uid
    if not study_uid:
        ids = _find_in_raw(api, "Study", {"PatientID": job.mrn, "AccessionNumber": job.accession_number})
        if len(ids) != 1:
            return None
        study_uid = get_json(api, f"/studies/{ids[0]}")["MainDicomTags"]["StudyInstanceUID"]
    for unit in _units(job):
        # A series is complete if its own record, or its whole study's, is met.
        row = conn.execute(
            "SELECT series_uid, instances FROM raw_cached_studies"
            " WHERE raw_node = %s AND study_uid = %s AND series_uid IN (%s, '')"
            " ORDER BY series_uid DESC LIMIT 1",
            (raw_node, study_uid, unit),
        ).fetchone()
        if row is None or raw_instance_count(api, study_uid, row[0]) < row[1]:
            return None
    return raw_study_id_for(api, study_uid)


def record_cached(conn: psycopg.Connection, raw_node: str, study_uid: str, series_uid: str, instances: int) -> None:
    conn.execute(
        "INSERT INTO raw_cached_studies (raw_node, study_uid, series_uid, instances) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (raw_node, study_uid, series_uid)"
        " DO UPDATE SET instances = EXCLUDED.instances, cached_at = now()",
        (raw_node, study_uid, series_uid, instances),
    )


# --- the archive ---------------------------------------------------------------


def _query(api: OrthancApi, modality: str, level: str, query: dict[str, str]) -> tuple[str, list[dict]]:
    """C-FIND; returns the query's ID and its answers as {keyword: value}."""
    try:
        created = post_json(api, f"/modalities/{modality}/query", {"Level": level, "Query": query})
        query_id = created["ID"]
        answers = [
            get_json(api, f"/queries/{query_id}/answers/{index}/content?simplify")
            for index in get_json(api, f"/queries/{query_id}/answers")
        ]
    except OrthancError as exc:
        raise RetrieveError(f"C-FIND on {modality} failed: {exc}", outage=True) from None
    return query_id, answers


def _outage_behind_a_failed_move(api: OrthancApi, modality: str, config: RetrieveSettings) -> bool:
    """Whether a failed C-MOVE is nobody's fault but the servers': the archive does not
    answer a C-ECHO, or raw's own storage is full. Otherwise the study is to blame."""
    try:
        api.post(f"/modalities/{modality}/echo", b"{}")
    except OrthancError:
        return True
    if config.max_storage_mb:
        used = float(get_json(api, "/statistics")["TotalDiskSizeMB"])
        return used >= 0.9 * config.max_storage_mb
    return False


@dataclass(frozen=True)
class FoundStudy:
    query_id: str  # the C-FIND whose answers a C-MOVE retrieves
    study_uid: str
    instances: dict[str, int]  # per unit ('' = whole study, else series UID)


def _find_study(api: OrthancApi, modality: str, job: StudyJob) -> FoundStudy | None:
    """What this archive holds of the request, or None if it lacks the study.

    By study UID first, then by patient ID plus accession number (a UID that
    the extract got wrong is a known fault of upstream records).
    """
    wanted = {"NumberOfStudyRelatedInstances": ""}
    answers: list[dict] = []
    if job.study_uid:
        query_id, answers = _query(api, modality, "Study", {"StudyInstanceUID": job.study_uid, **wanted})
    if not answers and job.accession_number:
        query_id, answers = _query(api, modality, "Study", {
            "PatientID": job.mrn, "AccessionNumber": job.accession_number, "StudyInstanceUID": "", **wanted,
        })
    if not answers:
        return None
    uids = {a.get("StudyInstanceUID", "") for a in answers}
    if len(uids) != 1 or "" in uids:
        raise AmbiguousStudy(f"{len(uids)} studies on {modality} match the request")
    study_uid = uids.pop()
    if job.series_uids:
        return _find_series(api, modality, job, study_uid)
    count = _count(answers[0].get("NumberOfStudyRelatedInstances"))
    if count is None:  # an archive that reports no counts: count what it lists
        count = len(_archive_sop_uids(api, modality, study_uid, []))
    return FoundStudy(query_id, study_uid, {"": count})


def _count(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _find_series(api: OrthancApi, modality: str, job: StudyJob, study_uid: str) -> FoundStudy:
    query_id, answers = _query(api, modality, "Series", {
        "StudyInstanceUID": study_uid, "SeriesInstanceUID": "\\".join(job.series_uids),
        "NumberOfSeriesRelatedInstances": "",
    })
    found = {a.get("SeriesInstanceUID"): a.get("NumberOfSeriesRelatedInstances") for a in answers}
    missing = [s for s in job.series_uids if s not in found]
    if missing:
        raise StudyNotFound(f"{len(missing)} of {len(job.series_uids)} requested series not on {modality}")
    counts = {s: _count(found[s]) for s in job.series_uids}
    for series_uid in [s for s, n in counts.items() if n is None]:
        counts[series_uid] = len(_archive_sop_uids(api, modality, study_uid, [series_uid]))
    return FoundStudy(query_id, study_uid, counts)


def _archive_sop_uids(api: OrthancApi, modality: str, study_uid: str, series_uids: list[str]) -> set[str]:
    """The SOP Instance UIDs the archive lists for the study (or some of its series)."""
    uids: set[str] = set()
    for series_uid in series_uids or [""]:
        _, answers = _query(api, modality, "Instance", {
            "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "SOPInstanceUID": "",
        })
        uids.update(a["SOPInstanceUID"] for a in answers if a.get("SOPInstanceUID"))
    return uids


def _fetch(
    api: OrthancApi,
    conn: psycopg.Connection,
    job: StudyJob,
    config: RetrieveSettings,
    modality: str,
    found: FoundStudy,
    on_transfer_start: Callable[[int], None],
    check_lease: Callable[[], None],
) -> Retrieved:
    """C-MOVE what raw lacks, then check that raw holds every instance the archive announced.

    A short transfer (the archive reported success and sent less, or nothing)
    is completed by moving the missing instances, `SHORT_TRANSFER_ROUNDS` times
    at most; still short, it is a failed attempt, never cached as complete.
    """
    study_uid, expected = found.study_uid, found.instances
    if sum(expected.values()) == 0:
        raise RetrieveError(f"{modality} lists the study with no instance")
    held = {unit: raw_instance_count(api, study_uid, unit) for unit in expected}
    incomplete = [u for u in expected if held[u] < expected[u]]
    # The archive's list of the study's instances, asked for once however many rounds need it.
    on_archive = functools.cache(lambda: _archive_sop_uids(api, modality, study_uid, job.series_uids))
    moved = 0
    if incomplete:
        on_transfer_start(sum(expected.values()))
        if any(held[u] for u in incomplete):
            moved = _move_missing_instances(api, modality, study_uid, on_archive(), job.series_uids,
                                            config, check_lease)
        else:
            _move(api, modality, found.query_id, config, check_lease)
            moved = sum(expected.values())
        for _ in range(SHORT_TRANSFER_ROUNDS):
            short = [u for u in expected if raw_instance_count(api, study_uid, u) < expected[u]]
            if not short:
                break
            logger.warning("job %s: short transfer from %s; moving the missing instances", job.id, modality)
            moved += _move_missing_instances(api, modality, study_uid, on_archive(), job.series_uids,
                                             config, check_lease)
    for unit, count in expected.items():
        now_held = raw_instance_count(api, study_uid, unit)
        if now_held < count:
            raise RetrieveError(f"raw holds {now_held} of the {count} instances {modality} announced")
        record_cached(conn, config.raw_node, study_uid, unit, count)
    raw_study_id = raw_study_id_for(api, study_uid)
    if raw_study_id is None:
        raise RetrieveError("the study is not in raw after the C-MOVE")
    return Retrieved(raw_study_id, from_cache=False, moved_instances=moved)


def _move_missing_instances(
    api: OrthancApi,
    modality: str,
    study_uid: str,
    on_archive: set[str],
    series_uids: list[str],
    config: RetrieveSettings,
    check_lease: Callable[[], None],
) -> int:
    """Move only the instances of `on_archive` (the archive's SOP Instance UIDs) that raw lacks."""
    missing = sorted(on_archive - _raw_sop_uids(api, study_uid, series_uids))
    for start in range(0, len(missing), MISSING_INSTANCES_PER_MOVE):
        check_lease()
        chunk = missing[start:start + MISSING_INSTANCES_PER_MOVE]
        query_id, _ = _query(api, modality, "Instance", {
            "StudyInstanceUID": study_uid, "SOPInstanceUID": "\\".join(chunk),
        })
        _move(api, modality, query_id, config, check_lease)
    return len(missing)


def _move(api: OrthancApi, modality: str, query_id: str, config: RetrieveSettings,
          check_lease: Callable[[], None]) -> None:
    """C-MOVE every answer of a query to raw, as an asynchronous job, and wait for it.

    The job is cancelled if the lease is lost (another worker has the study)
    or the move outlasts its timeout.
    """
    try:
        job = post_json(api, f"/queries/{query_id}/retrieve",
                        {"TargetAet": config.raw_aet, "Asynchronous": True})
    except OrthancError as exc:
        raise RetrieveError(f"C-MOVE could not start: {exc}", outage=True) from None
    job_id = job["ID"]
    deadline = time.monotonic() + config.move_timeout_seconds
    try:
        while True:
            time.sleep(config.poll_seconds)
            check_lease()
            try:
                state = get_json(api, f"/jobs/{job_id}")
            except OrthancError as exc:
                raise RetrieveError(f"C-MOVE job could not be polled: {exc}", outage=True) from None
            if state["State"] == "Success":
                return
            if state["State"] in ("Failure", "Paused"):
                raise RetrieveError(
                    f"C-MOVE failed: {state.get('ErrorDescription', state['State'])}",
                    outage=_outage_behind_a_failed_move(api, modality, config))
            if time.monotonic() > deadline:
                raise RetrieveError(f"C-MOVE timed out after {config.move_timeout_seconds:.0f} s",
                                    outage=_outage_behind_a_failed_move(api, modality, config))
    except BaseException:
        _cancel(api, job_id)
        raise


def _cancel(api: OrthancApi, job_id: str) -> None:
    try:
        api.post(f"/jobs/{job_id}/cancel", b"")
    except OrthancError:
        pass  # the job has ended meanwhile
