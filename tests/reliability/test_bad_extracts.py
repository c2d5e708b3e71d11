"""Bad extracts: each one clear error naming the file, row and column (never a value),
and nothing loaded. The extracts are generated OMOP ES folders, then broken."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.settings import REPO_ROOT
from orthanc_plugins.raw.extracts import ExtractError, queue_extract, read_omop_extract
from pixl_stack.omop import Procedure, write_omop_extract

MRNS = ("MRN-SECRET-1", "MRN-SECRET-2")
LINKS = "private/PROCEDURE_OCCURRENCE_LINKS.parquet"
PEOPLE = "private/PERSON_LINKS.parquet"
PROCEDURES = "public/omop/PROCEDURE_OCCURRENCE.parquet"


@pytest.fixture
def extract(tmp_path) -> Path:
    procedures = [
        Procedure(number, MRNS[number % 2], f"ACC-SECRET-{number}", f"1.2.826.0.1.{number}",
                  datetime.date(2020, 1, number))
        for number in (1, 2, 3)
    ]
    return write_omop_extract(tmp_path / "extract", "demo", datetime.datetime(2030, 2, 3, 4, 5, 6),
                              procedures)


@pytest.fixture
def conn(pixl_settings):
    with pixl_db.connect(pixl_settings, autocommit=True) as connection:
        yield connection


@pytest.fixture
def settings(pixl_settings):
    return dataclasses.replace(pixl_settings, projects_dir=REPO_ROOT / "projects",
                               tag_rules_dir=REPO_ROOT / "tag_rules")


def _rewrite(path: Path, **columns: pa.Array) -> None:
    table = pq.read_table(path)
    for name, values in columns.items():
        if values is None:
            table = table.drop_columns([name])
        else:
            table = table.set_column(table.column_names.index(name), name, values)
    pq.write_table(table, path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    path.write_bytes(b"PAR1" + bytes(range(256)) * 4)


def _empty(folder: Path) -> None:
    for name in (LINKS, PEOPLE, PROCEDURES):
        table = pq.read_table(folder / name)
        pq.write_table(table.slice(0, 0), folder / name)


BREAKS = {
    "truncated parquet": (lambda f: _truncate(f / PEOPLE),
                          f"{PEOPLE}: not a readable parquet file"),
    "corrupt parquet": (lambda f: _garble(f / LINKS), f"{LINKS}: not a readable parquet file"),
    "missing column": (lambda f: _rewrite(f / LINKS, StudyUid_X=None),
                       f"{LINKS}: missing column(s) StudyUid_X"),
    "person_id of text": (
        lambda f: _rewrite(f / PEOPLE, person_id=pa.array(["one", "two"])),
        f"{PEOPLE} row 1, column person_id: not a whole number"),
    "procedure id of a fraction": (
        lambda f: _rewrite(f / PROCEDURES, procedure_occurrence_id=pa.array([1.5, 2.0, 3.0])),
        f"{PROCEDURES} row 1, column procedure_occurrence_id: not a whole number"),
    "procedure_date of text": (
        lambda f: _rewrite(f / PROCEDURES, procedure_date=pa.array(["soon", "later", "never"])),
        f"{PROCEDURES} row 1, column procedure_date: not a date"),
    "MRN of numbers": (
        lambda f: _rewrite(f / PEOPLE, PrimaryMrn=pa.array([[1], [2]])),
        f"{PEOPLE} row 1, column PrimaryMrn: not text"),
    "empty extract": (_empty, f"{PROCEDURES}: no rows"),
    "summary not JSON": (lambda f: (f / "extract_summary.json").write_text("{not json"),
                         "extract_summary.json: needs settings.cdm_source_name and a datetime"),
    "no summary": (lambda f: (f / "extract_summary.json").unlink(),
                   "OMOP extract: extract_summary.json not found"),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_a_broken_extract_is_one_clear_error_and_loads_nothing(extract, conn, settings, broken):
    spoil, message = BREAKS[broken]
    spoil(extract)

    with pytest.raises(ExtractError) as caught:
        queue_extract(conn, settings, read_omop_extract(extract))

    assert str(caught.value).startswith(message), str(caught.value)
    for secret in (*MRNS, "ACC-SECRET", "1.2.826.0.1"):
        assert secret not in str(caught.value)
    assert conn.execute("SELECT count(*) FROM extracts").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM study_jobs").fetchone()[0] == 0


def test_the_unbroken_extract_loads(extract, conn, settings):
    """The control: the same generated extract, not broken, is queued whole."""
    summary = queue_extract(conn, settings, read_omop_extract(extract))
    assert (summary.project, summary.studies, summary.queued) == ("demo", 3, 3)


def test_an_extract_of_an_unknown_project_loads_nothing(tmp_path, conn, settings):
    folder = write_omop_extract(tmp_path / "other", "No Such Project",
                                datetime.datetime(2030, 1, 1),
                                [Procedure(1, "MRN-X", "ACC-X", "1.2.3", datetime.date(2020, 1, 1))])
    with pytest.raises(ExtractError, match="unknown project 'no-such-project'"):
        queue_extract(conn, settings, read_omop_extract(folder))
    assert conn.execute("SELECT count(*) FROM extracts").fetchone()[0] == 0
