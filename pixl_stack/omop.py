"""Write OMOP ES extracts in the layout of the existing PIXL system (flat files).

Used by the demo and the tests to make extracts of generated studies:

    extract_summary.json                       settings.cdm_source_name, datetime
    public/omop/PROCEDURE_OCCURRENCE.parquet   the public part, exported as is
    private/PERSON_LINKS.parquet               person_id -> PrimaryMrn
    private/PROCEDURE_OCCURRENCE_LINKS.parquet procedure_occurrence_id -> AccessionNumber, StudyUid_X
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Procedure:
    procedure_occurrence_id: int
    mrn: str
    accession_number: str
    study_uid: str
    study_date: datetime.date


def write_omop_extract(
    folder: Path, cdm_source_name: str, generated_at: datetime.datetime, procedures: list[Procedure]
) -> Path:
    folder = Path(folder)
    (folder / "public" / "omop").mkdir(parents=True, exist_ok=True)
    (folder / "private").mkdir(parents=True, exist_ok=True)
    (folder / "extract_summary.json").write_text(json.dumps({
        "datetime": generated_at.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {"cdm_source_name": cdm_source_name},
    }, indent=4))

    person_ids: dict[str, int] = {}
    for procedure in procedures:
        person_ids.setdefault(procedure.mrn, len(person_ids) + 1)

    gmt = datetime.UTC
    pq.write_table(pa.table({
        "procedure_occurrence_id": pa.array([p.procedure_occurrence_id for p in procedures], pa.int32()),
        "person_id": pa.array([person_ids[p.mrn] for p in procedures], pa.int32()),
        "procedure_concept_id": pa.array([4200610] * len(procedures), pa.int32()),
        "procedure_date": pa.array([p.study_date for p in procedures], pa.date32()),
        "procedure_datetime": pa.array(
            [datetime.datetime.combine(p.study_date, datetime.time(9), gmt) for p in procedures],
            pa.timestamp("us", tz="GMT"),
        ),
        "procedure_type_concept_id": pa.array([32817] * len(procedures), pa.int32()),
    }), folder / "public" / "omop" / "PROCEDURE_OCCURRENCE.parquet")
    pq.write_table(pa.table({
        "person_id": pa.array(list(person_ids.values()), pa.int32()),
        "PrimaryMrn": pa.array(list(person_ids), pa.string()),
    }), folder / "private" / "PERSON_LINKS.parquet")
    pq.write_table(pa.table({
        "procedure_occurrence_id": pa.array([p.procedure_occurrence_id for p in procedures], pa.int32()),
        "AccessionNumber": pa.array([p.accession_number for p in procedures], pa.string()),
        "StudyUid_X": pa.array([p.study_uid for p in procedures], pa.string()),
    }), folder / "private" / "PROCEDURE_OCCURRENCE_LINKS.parquet")
    return folder
