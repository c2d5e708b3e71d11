"""The parquet export, checked row by row against a flat OMOP extract: the generated one and
PIXL's original (where present)."""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from destination_support import (
    FTPS_PASSWORD,
    TlsFiles,
    set_ftps_secrets,
    start_ftps_server,
    stop_process,
)

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.secrets import FileSecrets
from orthanc_plugins.raw.parquet_export import (
    ParquetExportError,
    extract_folder,
    run_parquet_export,
)
from pixl_stack.certs import make_self_signed_cert

SLUG = "test-extract-uclh-omop-cdm"  # slugified cdm_source_name of the fixture extract
EXTRACT = "2023-12-07t14-08-58"  # its datetime, slugified as PIXL does


@pytest.fixture
def conn(pixl_settings):
    with pixl_db.connect(pixl_settings, autocommit=True) as connection:
        yield connection


@pytest.fixture
def omop(pixl_format_inputs) -> Path:
    return pixl_format_inputs / "omop"


@pytest.fixture
def kept_public_dir(omop, tmp_path) -> Path:
    """Where raw keeps the extract's public files when it loads the extract."""
    kept = tmp_path / "kept" / SLUG / EXTRACT / "public"
    shutil.copytree(omop / "public", kept)
    return kept


def procedures_of_fixture(omop: Path) -> list[dict]:
    """The procedures raw queues (those with an accession number, as PIXL does), with the
    MRN and accession number it queues them by."""
    people = {r["person_id"]: r for r in pq.read_table(omop / "private/PERSON_LINKS.parquet").to_pylist()}
    links = {r["procedure_occurrence_id"]: r
             for r in pq.read_table(omop / "private/PROCEDURE_OCCURRENCE_LINKS.parquet").to_pylist()}
    procedures = pq.read_table(omop / "public/omop/PROCEDURE_OCCURRENCE.parquet").to_pylist()
    return [
        {"procedure_occurrence_id": p["procedure_occurrence_id"],
         "mrn": people[p["person_id"]]["PrimaryMrn"],
         "accession_number": links[p["procedure_occurrence_id"]]["AccessionNumber"] or "",
         "study_uid": links[p["procedure_occurrence_id"]]["StudyUid_X"] or "",
         "study_date": p["procedure_date"]}
        for p in procedures
        if links[p["procedure_occurrence_id"]]["AccessionNumber"]
    ]


def insert_extract(conn, name: str, public_dir: Path | None) -> int:
    return conn.execute(
        "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind, public_dir)"
        " VALUES (%s, %s, %s, 'omop', %s) RETURNING id",
        (SLUG, name, datetime.datetime(2023, 12, 7, 14, 8, 58, tzinfo=datetime.UTC),
         str(public_dir) if public_dir else None),
    ).fetchone()[0]


def insert_job(conn, extract_id: int, procedure: dict, state: str, pseudo: str | None,
               series_uids: tuple[str, ...] = ()) -> None:
    conn.execute(
        "INSERT INTO study_jobs (extract_id, project_slug, mrn, accession_number, study_uid,"
        " series_uids, study_date, procedure_occurrence_id, state, pseudo_study_uid)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (extract_id, SLUG, procedure["mrn"], procedure["accession_number"], procedure["study_uid"],
         list(series_uids), procedure["study_date"], procedure["procedure_occurrence_id"], state,
         pseudo),
    )


def pseudo_uid(procedure_id: int) -> str:
    return f"2.25.{1000 + procedure_id}"


@pytest.fixture
def loaded_extract(conn, omop, kept_public_dir):
    """The fixture extract in the database as raw leaves it: procedure 4 exported (and once
    more as a series-level request of the same study), procedure 5 failed after
    anonymisation; plus an exported study of another extract of the project."""
    extract_id = insert_extract(conn, EXTRACT, kept_public_dir)
    procedures = {p["procedure_occurrence_id"]: p for p in procedures_of_fixture(omop)}
    assert sorted(procedures) == [4, 5]
    insert_job(conn, extract_id, procedures[4], "exported", pseudo_uid(4))
    insert_job(conn, extract_id, procedures[4], "exported", pseudo_uid(4), series_uids=("1.2.3",))
    insert_job(conn, extract_id, procedures[5], "failed", pseudo_uid(5))
    other = insert_extract(conn, "2024-01-01t00-00-00", kept_public_dir)
    insert_job(conn, other, procedures[5], "exported", "2.25.999999")
    return extract_id, [(4, pseudo_uid(4))]


@pytest.fixture
def none_settings(pixl_settings, tmp_path):
    """Settings whose copy of the test project has parquet destination `none`."""
    folder = tmp_path / "projects"
    folder.mkdir()
    text = (pixl_settings.projects_dir / f"{SLUG}.yaml").read_text()
    (folder / f"{SLUG}.yaml").write_text(text.replace('parquet: "ftps"', 'parquet: "none"'))
    return dataclasses.replace(pixl_settings, projects_dir=folder)


def export_rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT state, destination, uploaded_to, error FROM parquet_exports ORDER BY id"
    ).fetchall()


def test_export_writes_public_files_and_linker_row_by_row(conn, none_settings, loaded_extract, omop):
    _, expected = loaded_extract

    result = run_parquet_export(conn, none_settings, SLUG, EXTRACT)

    final = extract_folder(none_settings.export_root, SLUG, EXTRACT)
    assert result.state == "done", result.error
    assert result.export_dir == final
    assert result.linked_studies == len(expected) == 1
    # public files: the same files, byte for byte, under omop/public/
    sent = sorted(p.relative_to(omop / "public") for p in (omop / "public").rglob("*") if p.is_file())
    kept = sorted(p.relative_to(final / "omop/public") for p in (final / "omop/public").rglob("*")
                  if p.is_file())
    assert kept == sent == [Path("omop/PROCEDURE_OCCURRENCE.parquet")]
    assert (final / "omop/public/omop/PROCEDURE_OCCURRENCE.parquet").read_bytes() == \
        (omop / "public/omop/PROCEDURE_OCCURRENCE.parquet").read_bytes()
    # the linker: PIXL's columns, one row per exported procedure of this extract
    linker = pq.read_table(final / "radiology/IMAGE_LINKER.parquet")
    assert linker.column_names == ["procedure_occurrence_id", "pseudo_study_uid"]
    assert [(r["procedure_occurrence_id"], r["pseudo_study_uid"]) for r in linker.to_pylist()] == expected
    # latest points at it, relatively
    latest = none_settings.export_root / SLUG / "latest"
    assert latest.is_symlink() and str(latest.readlink()) == f"all_extracts/{EXTRACT}"
    assert (latest / "radiology/IMAGE_LINKER.parquet").is_file()
    assert export_rows(conn) == [("done", "none", None, None)]
    assert result.as_dict() == {
        "export_id": result.export_id, "project": SLUG, "extract": EXTRACT, "state": "done",
        "destination": "none", "export_dir": str(final), "uploaded_to": None,
        "linked_studies": 1, "error": None, "retryable": False,
    }
    # nothing else beside the export (no staging leftovers)
    assert sorted(p.name for p in (none_settings.export_root / SLUG).rglob("*")
                  if p.name.startswith(".")) == []


def test_running_again_is_safe_and_replaces_the_export(conn, none_settings, loaded_extract):
    extract_id, expected = loaded_extract
    run_parquet_export(conn, none_settings, SLUG, EXTRACT)
    conn.execute("UPDATE study_jobs SET state = 'exported' WHERE extract_id = %s"
                 " AND procedure_occurrence_id = 5", (extract_id,))

    result = run_parquet_export(conn, none_settings, SLUG, EXTRACT)

    final = extract_folder(none_settings.export_root, SLUG, EXTRACT)
    linker = pq.read_table(final / "radiology/IMAGE_LINKER.parquet").to_pylist()
    assert result.state == "done" and result.linked_studies == 2
    assert [(r["procedure_occurrence_id"], r["pseudo_study_uid"]) for r in linker] == \
        expected + [(5, pseudo_uid(5))]
    assert sorted(p.name for p in final.parent.iterdir()) == [EXTRACT]
    assert [row[0] for row in export_rows(conn)] == ["done", "done"]


def test_missing_public_files_fail_cleanly(conn, none_settings, loaded_extract, kept_public_dir):
    shutil.rmtree(kept_public_dir)

    result = run_parquet_export(conn, none_settings, SLUG, EXTRACT)

    assert result.state == "failed" and not result.retryable
    assert result.error == (f"the public parquet files of extract '{EXTRACT}' are missing "
                            f"(expected under {kept_public_dir})")
    assert not (none_settings.export_root / SLUG / "all_extracts").exists() or \
        list((none_settings.export_root / SLUG / "all_extracts").iterdir()) == []
    assert export_rows(conn) == [("failed", "none", None, result.error)]


def test_unknown_extract_cannot_start(conn, none_settings):
    with pytest.raises(ParquetExportError, match="no extract 'nope' of project"):
        run_parquet_export(conn, none_settings, SLUG, "nope")
    assert export_rows(conn) == []


def test_a_run_that_died_is_marked_failed_by_the_next(conn, none_settings, loaded_extract):
    extract_id, _ = loaded_extract
    conn.execute("INSERT INTO parquet_exports (extract_id, state) VALUES (%s, 'running')", (extract_id,))

    run_parquet_export(conn, none_settings, SLUG, EXTRACT)

    states = [row[0] for row in export_rows(conn)]
    assert states == ["failed", "done"]
    assert export_rows(conn)[0][3].startswith("interrupted")


def test_an_export_already_running_is_refused(conn, none_settings, loaded_extract):
    conn.execute("INSERT INTO parquet_export_leases (project_slug, holder, expires_at)"
                 " VALUES (%s, 'another-process', now() + interval '1 minute')", (SLUG,))
    with pytest.raises(ParquetExportError, match="already running"):
        run_parquet_export(conn, none_settings, SLUG, EXTRACT)
    assert export_rows(conn) == []

    # A holder that died stops holding once its lease has run out.
    conn.execute("UPDATE parquet_export_leases SET expires_at = now() - interval '1 second'")
    assert run_parquet_export(conn, none_settings, SLUG, EXTRACT).state == "done"
    assert conn.execute("SELECT count(*) FROM parquet_export_leases").fetchone()[0] == 0


def test_a_non_autocommit_connection_is_refused(db, none_settings):
    with pytest.raises(ValueError, match="autocommit"):
        run_parquet_export(db, none_settings, SLUG, EXTRACT)


# --- through the FTPS destination ---------------------------------------------------------


@pytest.fixture
def tls(tmp_path) -> TlsFiles:
    return TlsFiles(*make_self_signed_cert(tmp_path / "cert.pem", tmp_path / "key.pem"))


@pytest.fixture
def ftps(tmp_path, tls, pixl_settings):
    server = start_ftps_server(tmp_path / "ftps", tls)
    set_ftps_secrets(FileSecrets(pixl_settings.secrets_file), "test", server, tls)
    yield server
    stop_process(server.process)


def test_export_uploads_the_tree_to_ftps(conn, pixl_settings, loaded_extract, ftps):
    _, expected = loaded_extract

    result = run_parquet_export(conn, pixl_settings, SLUG, EXTRACT)

    assert result.state == "done", result.error
    assert result.uploaded_to == f"{SLUG}/{EXTRACT}/parquet"
    local = extract_folder(pixl_settings.export_root, SLUG, EXTRACT)
    remote = ftps.root / SLUG / EXTRACT / "parquet"
    local_files = {p.relative_to(local): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    remote_files = {p.relative_to(remote): p.read_bytes() for p in remote.rglob("*") if p.is_file()}
    assert remote_files == local_files
    assert sorted(map(str, remote_files)) == [
        "omop/public/omop/PROCEDURE_OCCURRENCE.parquet", "radiology/IMAGE_LINKER.parquet"]
    linker = pq.read_table(remote / "radiology/IMAGE_LINKER.parquet").to_pylist()
    assert [(r["procedure_occurrence_id"], r["pseudo_study_uid"]) for r in linker] == expected
    assert export_rows(conn) == [("done", "ftps", f"{SLUG}/{EXTRACT}/parquet", None)]


def test_destination_down_publishes_locally_and_fails_clearly_until_uploaded(
    conn, pixl_settings, loaded_extract, ftps, tls
):
    """Built, published, then uploaded: an upload failure leaves the new local export
    published and complete, the remote one as it was, and a retryable failure."""
    extract_id, _ = loaded_extract
    assert run_parquet_export(conn, pixl_settings, SLUG, EXTRACT).state == "done"
    final = extract_folder(pixl_settings.export_root, SLUG, EXTRACT)
    remote = ftps.root / SLUG / EXTRACT / "parquet"
    remote_before = {p.relative_to(remote): p.read_bytes() for p in remote.rglob("*") if p.is_file()}
    stop_process(ftps.process)
    conn.execute("UPDATE study_jobs SET state = 'exported' WHERE extract_id = %s", (extract_id,))

    result = run_parquet_export(conn, pixl_settings, SLUG, EXTRACT)

    assert result.state == "failed" and result.retryable and result.export_dir == final
    assert result.error.startswith("upload failed: FTPS connection for project "
                                   f"{SLUG}: server unreachable")
    assert FTPS_PASSWORD not in result.error and "127.0.0.1" not in result.error
    assert len(pq.read_table(final / "radiology/IMAGE_LINKER.parquet")) == 2  # the new one
    assert sorted(p.name for p in final.parent.iterdir()) == [EXTRACT]  # no staging left
    remote_after = {p.relative_to(remote): p.read_bytes() for p in remote.rglob("*") if p.is_file()}
    assert remote_after == remote_before  # the earlier, complete upload is untouched
    assert [row[0] for row in export_rows(conn)] == ["done", "failed"]

    restarted = start_ftps_server(ftps.root.parent, tls, port=ftps.port)
    try:
        again = run_parquet_export(conn, pixl_settings, SLUG, EXTRACT)
    finally:
        stop_process(restarted.process)
    assert again.state == "done" and again.linked_studies == 2
    assert len(pq.read_table(remote / "radiology/IMAGE_LINKER.parquet")) == 2
