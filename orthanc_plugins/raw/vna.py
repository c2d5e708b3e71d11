"""The operator's view of the archive through raw: C-ECHO and C-FIND (pypx's
px-echo and px-find), with raw's own DICOM identity.

C-ECHO is `POST /modalities/{vna}/echo`; C-FIND is `POST /modalities/{vna}/query`
at study level, as the worker's retrieval does (retrieve.py). The query
values (MRN, accession number, study UID) reach the archive and nothing else:
they are never logged, and the answer names no patient or study, only what
an operator needs to judge an extract (date, modalities, counts, whether
raw's cache already holds the study).
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass
from typing import Any

from orthanc_plugins.common.orthanc_api import OrthancApi, OrthancError, get_json, post_json
from orthanc_plugins.raw.retrieve import raw_instance_count

# YYYY-MM-DD or YYYYMMDD, alone or as FROM-TO with either end open.
_DATE = r"\d{4}-\d{2}-\d{2}|\d{8}"
DATE_RANGE = re.compile(rf"^(?P<start>{_DATE})?(?P<range>-(?P<end>{_DATE})?)?$")
MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
FIND_KEYS = ("mrn", "accession", "study_uid", "date", "modality")


class VnaQueryError(ValueError):
    """A query raw cannot send; the message never quotes an identifying value."""


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    modality: str
    seconds: float
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "modality": self.modality, "seconds": round(self.seconds, 3),
                "error": self.error}


def echo(api: OrthancApi, modality: str) -> EchoResult:
    started = time.monotonic()
    try:
        api.post(f"/modalities/{modality}/echo", b"{}")
    except OrthancError as exc:
        return EchoResult(False, modality, time.monotonic() - started,
                          f"the archive did not answer the C-ECHO ({_short(exc)})")
    return EchoResult(True, modality, time.monotonic() - started, None)


def _short(exc: Exception) -> str:
    # Orthanc's error names the failed association, never a patient.
    return str(exc).splitlines()[0][:200]


def dicom_date_range(text: str) -> str:
    """`2020-01-01`, `20200101-20201231`, `2020-01-01-` ... as a DICOM date range."""
    match = DATE_RANGE.match(text.strip())
    if not match or not (match["start"] or match["end"]):
        raise VnaQueryError("date must be FROM or FROM-TO, each YYYY-MM-DD or YYYYMMDD (either end may be open)")
    parts = []
    for value in (match["start"], match["end"]):
        if value is None:
            parts.append("")
            continue
        try:
            parts.append(datetime.date.fromisoformat(value).strftime("%Y%m%d"))
        except ValueError:
            raise VnaQueryError(f"date {value} is not a calendar date") from None
    if match["range"] is None:
        return parts[0]
    if parts[0] and parts[1] and parts[0] > parts[1]:
        raise VnaQueryError("the date range ends before it starts")
    return f"{parts[0]}-{parts[1]}"


def build_query(criteria: dict[str, Any]) -> dict[str, str]:
    """The C-FIND identifier for the operator's criteria (keys FIND_KEYS)."""
    unknown = set(criteria) - set(FIND_KEYS)
    if unknown:
        raise VnaQueryError(f"unknown criteria: {', '.join(sorted(unknown))} (use {', '.join(FIND_KEYS)})")
    values = {k: str(v).strip() for k, v in criteria.items() if v not in (None, "")}
    if not set(values) & {"mrn", "accession", "study_uid", "date"}:
        raise VnaQueryError("give at least one of mrn, accession, study_uid or date")
    modality = values.get("modality", "").upper()
    if modality and not MODALITY.match(modality):
        raise VnaQueryError("modality must be a DICOM modality code such as CT or MR")
    return {
        "PatientID": values.get("mrn", ""),
        "AccessionNumber": values.get("accession", ""),
        "StudyInstanceUID": values.get("study_uid", ""),
        "StudyDate": dicom_date_range(values["date"]) if "date" in values else "",
        "ModalitiesInStudy": modality,
        "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
    }


def _count(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _iso_date(value: str) -> str | None:
    try:
        return datetime.datetime.strptime(value, "%Y%m%d").date().isoformat()
    except (TypeError, ValueError):
        return None


def cache_state(api: OrthancApi, study_uid: str, instances: int | None) -> str:
    """'complete', 'partial' or 'no': what raw's cache holds of an archive's study."""
    held = raw_instance_count(api, study_uid) if study_uid else 0
    if not held:
        return "no"
    return "complete" if instances is not None and held >= instances else "partial"


def find(api: OrthancApi, modality: str, criteria: dict[str, Any]) -> list[dict[str, Any]]:
    """The archive's studies matching the criteria, by date."""
    query = build_query(criteria)
    try:
        started = post_json(api, f"/modalities/{modality}/query", {"Level": "Study", "Query": query})
        answers = get_json(api, f"/queries/{started['ID']}/answers?expand&simplify")
    except OrthancError as exc:
        raise VnaQueryError(f"the C-FIND on {modality} failed ({_short(exc)})") from None
    try:
        api.delete(f"/queries/{started['ID']}")
    except OrthancError:
        pass  # Orthanc forgets old queries by itself
    studies = []
    for answer in answers:
        instances = _count(answer.get("NumberOfStudyRelatedInstances"))
        modalities = answer.get("ModalitiesInStudy") or ""
        studies.append({
            "study_date": _iso_date(answer.get("StudyDate", "")),
            "modalities": [m for m in modalities.split("\\") if m] if isinstance(modalities, str) else modalities,
            "series": _count(answer.get("NumberOfStudyRelatedSeries")),
            "instances": instances,
            "cached": cache_state(api, answer.get("StudyInstanceUID", ""), instances),
        })
    return sorted(studies, key=lambda s: (s["study_date"] or "", s["modalities"]))
