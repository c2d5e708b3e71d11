"""Extract loading against a real PostgreSQL: both OMOP layouts, CSV cohorts, idempotence, errors."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from orthanc_plugins.raw.extracts import (
    ExtractError,
    public_dir_for,
    queue_extract,
    read_csv_cohort,
    read_omop_extract,
    read_upload,
)


def _jobs(conn):
    return conn.execute(
        "SELECT project_slug, mrn, accession_number, study_uid, series_uids, state,"
        " procedure_occurrence_id FROM study_jobs ORDER BY id"
    ).fetchall()


def test_flat_omop_extract_queues_its_imaging_studies(conn, pixl_settings, pixl_format_inputs):
    extract = read_omop_extract(pixl_format_inputs / "omop")
    summary = queue_extract(conn, pixl_settings, extract)

    assert (summary.project, summary.extract) == ("test-extract-uclh-omop-cdm", "2023-12-07t14-08-58")
    assert (summary.studies, summary.queued, summary.already_exported) == (2, 2, 0)
    assert summary.modalities == ["DX", "CR"]
    assert summary.destination == {"dicom": "ftps", "parquet": "ftps"}
    # Only procedures with an accession number or study UID are imaging studies.
    assert [(j[1], j[2], j[6]) for j in _jobs(conn)] == [
        ("987654321", "AA12345601", 4), ("987654321", "AA12345605", 5),
    ]
    kept = public_dir_for(pixl_settings, summary.project, summary.extract)
    assert (kept / "omop" / "PROCEDURE_OCCURRENCE.parquet").is_file()
    assert not any(p.name.endswith("LINKS.parquet") for p in pixl_settings.state_dir.rglob("*"))


def test_batched_omop_extract_reads_every_part(conn, pixl_settings, pixl_format_inputs):
    extract = read_omop_extract(pixl_format_inputs / "omop-resources" / "omop-batched")
    summary = queue_extract(conn, pixl_settings, extract)

    assert (summary.studies, summary.queued) == (6, 6)
    procedures = sorted(j[6] for j in _jobs(conn))
    assert procedures == [1, 2, 3, 4, 5, 6]  # parts 0 and 1 both read; 7-10 have no imaging link
    kept = public_dir_for(pixl_settings, summary.project, summary.extract)
    assert len(list((kept / "omop" / "procedure_occurrence").glob("*.parquet"))) == 2


def test_loading_the_same_extract_again_adds_nothing(conn, pixl_settings, pixl_format_inputs):
    extract = read_omop_extract(pixl_format_inputs / "omop-resources" / "omop-batched")
    queue_extract(conn, pixl_settings, extract)
    again = queue_extract(conn, pixl_settings, read_omop_extract(pixl_format_inputs / "omop-resources" / "omop-batched"))

    assert (again.studies, again.queued) == (6, 0)
    assert conn.execute("SELECT count(*) FROM study_jobs").fetchone()[0] == 6
    assert conn.execute("SELECT count(*) FROM extracts").fetchone()[0] == 1


def test_studies_already_exported_for_the_project_are_not_queued_again(conn, pixl_settings, pixl_format_inputs):
    first = read_csv_cohort((pixl_format_inputs / "series-level-querying" / "all-series.csv").read_bytes(), "a.csv")
    queue_extract(conn, pixl_settings, first)
    conn.execute("UPDATE study_jobs SET state = 'exported', pseudo_study_uid = '9.9.9'")
    later = read_csv_cohort(
        (pixl_format_inputs / "series-level-querying" / "all-series.csv").read_bytes()
        .replace(b"2023-12-07T14:08:58Z", b"2024-02-01T10:00:00Z"),
        "b.csv",
    )
    summary = queue_extract(conn, pixl_settings, later)

    assert (summary.studies, summary.queued, summary.already_exported) == (1, 0, 1)
    rows = conn.execute(
        "SELECT e.extract_name, j.state, j.pseudo_study_uid FROM study_jobs j"
        " JOIN extracts e ON e.id = j.extract_id ORDER BY j.id"
    ).fetchall()
    assert rows == [("2023-12-07t14-08-58", "exported", "9.9.9"), ("2024-02-01t10-00-00", "exported", "9.9.9")]


def test_csv_rows_are_normalised(conn, settings_with_project, pixl_format_inputs):
    settings = settings_with_project("ms-pinpoint-test")
    path = pixl_format_inputs / "omop-resources" / "test_whitespace_and_na_processing.csv"
    summary = queue_extract(conn, settings, read_csv_cohort(path.read_bytes(), path.name))

    assert (summary.project, summary.studies) == ("ms-pinpoint-test", 3)
    assert [(j[1], j[2], j[3], j[5]) for j in _jobs(conn)] == [
        ("patient_identifier", "123456789", "1.2.3.4.5.6.7.8", "queued"),
        # Nothing to find such a study by: recorded, visibly skipped, never queried by MRN alone.
        ("whitespace_idenfifiers", "", "", "skipped"),
        ("NA_idenfifiers", "", "", "skipped"),
    ]


def test_duplicate_csv_rows_are_dropped(conn, settings_with_project, pixl_format_inputs):
    settings = settings_with_project("i-am-a-project")
    path = pixl_format_inputs / "omop-resources" / "duplicate_input.csv"
    summary = queue_extract(conn, settings, read_csv_cohort(path.read_bytes(), path.name))

    assert summary.studies == 3
    assert [j[6] for j in _jobs(conn)] == [1, 2, 3]


def test_series_level_rows_keep_every_series(conn, pixl_settings, pixl_format_inputs):
    path = pixl_format_inputs / "series-level-querying" / "all-series.csv"
    queue_extract(conn, pixl_settings, read_csv_cohort(path.read_bytes(), path.name))

    (job,) = _jobs(conn)
    assert job[4] == [
        "1.3.46.670589.11.38023.5.0.7404.2023012517551890000",
        "1.3.46.670589.11.38023.5.0.7404.2023012517551890001",
    ]


def test_unknown_project_is_one_clear_error_and_loads_nothing(conn, pixl_settings, pixl_format_inputs):
    path = pixl_format_inputs / "omop-resources" / "batch_input.csv"
    with pytest.raises(ExtractError, match="unknown project 'i-am-a-project'"):
        queue_extract(conn, pixl_settings, read_csv_cohort(path.read_bytes(), path.name))
    assert conn.execute("SELECT count(*) FROM extracts").fetchone()[0] == 0


def test_malformed_csv_names_file_line_and_column_but_not_the_value(pixl_format_inputs):
    text = (pixl_format_inputs / "omop-resources" / "batch_input.csv").read_text()
    broken = text.replace("2023-01-01,2.3.4", "01/01/2023,2.3.4")
    with pytest.raises(ExtractError) as error:
        read_csv_cohort(broken.encode(), "cohort.csv")
    assert str(error.value) == "cohort.csv line 3, column study_date: not a valid value"

    with pytest.raises(ExtractError, match="cohort.csv: missing column.s. mrn"):
        read_csv_cohort(text.replace("mrn,", "patient,", 1).encode(), "cohort.csv")


def test_omop_with_a_study_of_an_unknown_person_is_an_error(pixl_format_inputs, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    copy = tmp_path / "omop"
    shutil.copytree(pixl_format_inputs / "omop", copy)
    people = pq.read_table(copy / "private" / "PERSON_LINKS.parquet")
    pq.write_table(people.slice(0, 1), copy / "private" / "PERSON_LINKS.parquet")  # drop person 2
    with pytest.raises(ExtractError) as error:
        read_omop_extract(copy)
    assert str(error.value) == (
        "public/omop/PROCEDURE_OCCURRENCE.parquet row 4, column person_id:"
        " no PrimaryMrn in private/PERSON_LINKS.parquet"
    )
    assert "987654321" not in str(error.value)


def test_dry_run_counts_exactly_and_changes_nothing(conn, pixl_settings, pixl_format_inputs):
    extract = read_omop_extract(pixl_format_inputs / "omop-resources" / "omop-batched")
    summary = queue_extract(conn, pixl_settings, extract, dry_run=True)

    assert (summary.studies, summary.queued, summary.dry_run) == (6, 6, True)
    assert conn.execute("SELECT count(*) FROM study_jobs").fetchone()[0] == 0
    assert not public_dir_for(pixl_settings, summary.project, summary.extract).exists()


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            archive.write(path, Path("my-extract") / path.relative_to(folder))
    return buffer.getvalue()


def test_uploaded_zip_of_an_omop_folder_is_read(pixl_format_inputs, tmp_path):
    body = _zip_folder(pixl_format_inputs / "omop-resources" / "omop-batched")
    extract = read_upload(body, "application/zip", "", tmp_path)
    assert (extract.project_slug, len(extract.rows)) == ("test-extract-uclh-omop-cdm", 6)


def test_zip_escaping_its_folder_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil/extract_summary.json", "{}")
    with pytest.raises(ExtractError, match="leaves the extract folder"):
        read_upload(buffer.getvalue(), "application/zip", "", tmp_path)
