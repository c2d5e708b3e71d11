"""The parquet export of an extract: public OMOP files plus the image linker, then upload.

Layout, as in PIXL:

    EXPORT_ROOT/<slug>/all_extracts/<extract>/omop/public/...        the extract's public files
    EXPORT_ROOT/<slug>/all_extracts/<extract>/radiology/IMAGE_LINKER.parquet
    EXPORT_ROOT/<slug>/latest -> all_extracts/<extract>             (a relative link)

IMAGE_LINKER has PIXL's columns `procedure_occurrence_id` and
`pseudo_study_uid`: one row per (procedure, pseudonymised study) of the
extract's studies that were exported.

All or nothing: the tree is written into a hidden staging folder beside its
final place, uploaded from there through the project's parquet destination
(`pixl_export_parquet` hook), and only then renamed into place and linked as
`latest`. On failure the staging folder is removed, an earlier export of the
extract is left as it was, and the `parquet_exports` row says `failed` with a
message that holds no identifying value and no secret. Running it again is
safe; two runs of one extract at once are refused (a PostgreSQL advisory lock).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from orthanc_plugins.common.projects import load_project_by_slug
from orthanc_plugins.common.secrets import SecretStore, open_secret_store
from orthanc_plugins.common.settings import Settings
from pixl_hooks import plugins
from pixl_hooks.types import DestinationError

logger = logging.getLogger(__name__)

LINKER_FILE = "IMAGE_LINKER.parquet"
LINKER_SCHEMA = pa.schema([
    ("procedure_occurrence_id", pa.int64()),
    ("pseudo_study_uid", pa.string()),
])
# High 16 bits of the advisory-lock key of an extract's export ("PQ"); the low bits are its id.
_LOCK_NAMESPACE = 0x5051 << 48


class ParquetExportError(ValueError):
    """The export cannot start (unknown extract, one already running); no row was written."""


class MissingPublicFiles(Exception):
    """The extract's kept public files are gone; the export fails (its message is safe to show)."""


@dataclass(frozen=True)
class ExportResult:
    export_id: int
    project: str
    extract: str
    state: str  # "done" or "failed"
    destination: str
    export_dir: Path | None = None
    uploaded_to: str | None = None
    linked_studies: int = 0
    error: str | None = None
    retryable: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for `POST /pixl/exports`."""
        return {
            "export_id": self.export_id, "project": self.project, "extract": self.extract,
            "state": self.state, "destination": self.destination,
            "export_dir": str(self.export_dir) if self.export_dir else None,
            "uploaded_to": self.uploaded_to, "linked_studies": self.linked_studies,
            "error": self.error, "retryable": self.retryable,
        }


@dataclass(frozen=True)
class _Extract:
    id: int
    public_dir: Path | None


def extract_folder(export_root: Path, project_slug: str, extract_name: str) -> Path:
    return Path(export_root) / project_slug / "all_extracts" / extract_name


def run_parquet_export(
    conn: psycopg.Connection,
    settings: Settings,
    project_slug: str,
    extract_name: str,
    *,
    secrets: SecretStore | None = None,
    manager: Any = None,
) -> ExportResult:
    """Export one extract's parquet files; see the module's docstring.

    `conn` must be in autocommit mode: the `running` row is visible to others
    while the export runs. Returns the result whether it succeeded or failed;
    raises `ParquetExportError` (or `ProjectConfigError`) only when it cannot start.
    """
    if not conn.autocommit:
        raise ValueError("run_parquet_export needs a connection in autocommit mode")
    project = load_project_by_slug(project_slug, settings.projects_dir, settings.tag_rules_dir)
    extract = _find_extract(conn, project_slug, extract_name)
    lock_key = _LOCK_NAMESPACE | extract.id
    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key,)).fetchone()
    if not (locked and locked[0]):
        raise ParquetExportError(
            f"an export of extract {extract_name!r} of project {project_slug!r} is already running"
        )
    try:
        export_id = _start_row(conn, extract.id, project.parquet_destination)
        final = extract_folder(settings.export_root, project_slug, extract_name)
        staging = final.with_name(f".{extract_name}.partial-{export_id}")
        try:
            linked, receipt = _build_and_upload(
                conn, project, extract, extract_name, staging,
                secrets if secrets is not None else open_secret_store(settings), manager,
            )
            _publish(staging, final, export_id)
            _point_latest(final, export_id)
        except Exception as exc:  # noqa: BLE001 - every failure ends as a failed row
            shutil.rmtree(staging, ignore_errors=True)
            error, retryable = _describe_failure(exc)
            _finish_row(conn, export_id, "failed", error=error)
            logger.warning("parquet export %d of %s/%s failed: %s",
                           export_id, project_slug, extract_name, error)
            return ExportResult(export_id, project_slug, extract_name, "failed",
                                project.parquet_destination, error=error, retryable=retryable)
        _finish_row(conn, export_id, "done", export_dir=final, uploaded_to=receipt.location)
        logger.info("parquet export %d of %s/%s done: %d linked studies, destination %s",
                    export_id, project_slug, extract_name, linked, project.parquet_destination)
        return ExportResult(export_id, project_slug, extract_name, "done",
                            project.parquet_destination, export_dir=final,
                            uploaded_to=receipt.location, linked_studies=linked)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))


def _find_extract(conn: psycopg.Connection, project_slug: str, extract_name: str) -> _Extract:
    row = conn.execute(
        "SELECT id, public_dir FROM extracts WHERE project_slug = %s AND extract_name = %s",
        (project_slug, extract_name),
    ).fetchone()
    if row is None:
        raise ParquetExportError(
            f"no extract {extract_name!r} of project {project_slug!r} has been loaded"
        )
    return _Extract(id=row[0], public_dir=Path(row[1]) if row[1] else None)


def _start_row(conn: psycopg.Connection, extract_id: int, destination: str) -> int:
    with conn.transaction():
        # We hold the extract's lock, so a row still 'running' belongs to a run that died.
        conn.execute(
            "UPDATE parquet_exports SET state = 'failed', finished_at = now(),"
            " error = 'interrupted: the process running this export stopped'"
            " WHERE extract_id = %s AND state = 'running'",
            (extract_id,),
        )
        row = conn.execute(
            "INSERT INTO parquet_exports (extract_id, state, destination)"
            " VALUES (%s, 'running', %s) RETURNING id",
            (extract_id, destination),
        ).fetchone()
    assert row is not None  # INSERT ... RETURNING always answers one row
    return int(row[0])


def _finish_row(
    conn: psycopg.Connection, export_id: int, state: str, *,
    export_dir: Path | None = None, uploaded_to: str | None = None, error: str | None = None,
) -> None:
    conn.execute(
        "UPDATE parquet_exports SET state = %s, finished_at = now(), export_dir = %s,"
        " uploaded_to = %s, error = %s WHERE id = %s",
        (state, str(export_dir) if export_dir else None, uploaded_to, error, export_id),
    )


def _build_and_upload(conn, project, extract: _Extract, extract_name: str, staging: Path,
                      secrets: SecretStore, manager: Any):
    """Write the tree into `staging` and upload it; returns (linked studies, receipt)."""
    public_dir = extract.public_dir
    if public_dir is None or not public_dir.is_dir() or not any(public_dir.rglob("*.parquet")):
        raise MissingPublicFiles(
            f"the public parquet files of extract {extract_name!r} are missing"
            + (f" (expected under {public_dir})" if public_dir else " (none were kept at load)")
        )
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(public_dir, staging / "omop" / "public")
    rows = linker_rows(conn, extract.id)
    write_image_linker(rows, staging / "radiology" / LINKER_FILE)
    receipt = plugins.export_parquet(project, extract_name, staging, secrets, manager)
    return len(rows), receipt


def linker_rows(conn: psycopg.Connection, extract_id: int) -> list[tuple[int, str]]:
    """(procedure_occurrence_id, pseudo_study_uid) of the extract's exported studies."""
    return [
        (int(row[0]), str(row[1]))
        for row in conn.execute(
            "SELECT DISTINCT procedure_occurrence_id, pseudo_study_uid FROM study_jobs"
            " WHERE extract_id = %s AND state = 'exported'"
            " AND procedure_occurrence_id IS NOT NULL AND pseudo_study_uid IS NOT NULL"
            " ORDER BY 1, 2",
            (extract_id,),
        )
    ]


def write_image_linker(rows: list[tuple[int, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"procedure_occurrence_id": [r[0] for r in rows], "pseudo_study_uid": [r[1] for r in rows]},
        schema=LINKER_SCHEMA,
    )
    pq.write_table(table, path)


def _publish(staging: Path, final: Path, export_id: int) -> None:
    """Put `staging` in the place of `final`; an earlier export is kept until the swap is done."""
    if not final.exists():
        os.rename(staging, final)
        return
    old = final.with_name(f".{final.name}.old-{export_id}")
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except OSError:
        os.rename(old, final)
        raise
    shutil.rmtree(old)


def _point_latest(final: Path, export_id: int) -> None:
    """Atomically point `<slug>/latest` at this extract (a relative link, so that the
    export root can be mounted elsewhere)."""
    project_dir = final.parent.parent
    temporary = project_dir / f".latest-{export_id}"
    temporary.unlink(missing_ok=True)
    os.symlink(Path("all_extracts") / final.name, temporary, target_is_directory=True)
    os.replace(temporary, project_dir / "latest")


def _describe_failure(exc: Exception) -> tuple[str, bool]:
    """A message fit for the database and the operator, and whether a retry may succeed.

    DestinationErrors and our own messages are written to be safe; for other
    errors only the type and a path under PIXL's own folders are shown.
    """
    if isinstance(exc, DestinationError):
        return f"upload failed: {exc}", exc.retryable
    if isinstance(exc, MissingPublicFiles):
        return str(exc), False
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"writing the export failed: {exc.strerror or type(exc).__name__}{where}", True
    logger.exception("unexpected failure of a parquet export")
    return f"internal error ({type(exc).__name__}); see the PIXL log", False
