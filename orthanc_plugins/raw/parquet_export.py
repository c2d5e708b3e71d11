"""The parquet export of an extract: public OMOP files plus the image linker, then upload.

Layout, as in PIXL:

    EXPORT_ROOT/<slug>/all_extracts/<extract>/omop/public/...        the extract's public files
    EXPORT_ROOT/<slug>/all_extracts/<extract>/radiology/IMAGE_LINKER.parquet
    EXPORT_ROOT/<slug>/latest -> all_extracts/<extract>             (a relative link)

IMAGE_LINKER has PIXL's columns `procedure_occurrence_id` and
`pseudo_study_uid`: one row per (procedure, pseudonymised study) of the
extract's studies that were exported.

All or nothing, in this order:

1. built complete aside, in a hidden `.<extract>.partial-<export id>` folder;
2. published atomically: renamed into place, or, over an earlier export of the
   extract, swapped with it in one `renameat2(RENAME_EXCHANGE)`, so that
   `all_extracts/<extract>` is at every moment either the old or the new
   complete tree, never missing (the old one is then removed);
3. linked: `latest` is replaced by renaming a temporary link over it, so it
   always names a complete extract, the newest one published;
4. uploaded through the project's parquet destination (`pixl_export_parquet`
   hook), which makes it appear complete there.

A run killed at any point leaves hidden leftovers only (`.partial`, `.old`,
`.latest` names), which the next export of the project removes first. A
failure before publishing changes nothing visible; a failed upload leaves the
new local export published and the `parquet_exports` row `failed`, with a
message that holds no identifying value and no secret, to be run again.

One export per project at a time: a lease row (`parquet_export_leases`, on the
database's clock) renewed by a background thread, not a session advisory lock,
so that it survives PostgreSQL restarting mid-export; the export's own
database writes reconnect and retry for a while when the server is away.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from orthanc_plugins.common import db as pixl_db
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
LEASE_SECONDS = 60.0
# How long the export's database writes keep retrying while PostgreSQL is away.
DATABASE_PATIENCE_SECONDS = 120.0
# Linux's renameat2 flag: swap two paths in one step.
_RENAME_EXCHANGE = 2


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
    lease_seconds: float = LEASE_SECONDS,
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
    lease = ProjectLease(settings, project_slug, lease_seconds)
    if not lease.acquire(conn):
        raise ParquetExportError(
            f"an export of project {project_slug!r} is already running"
            f" (asked for extract {extract_name!r})"
        )
    try:
        export_id = _start_row(conn, project_slug, extract.id, project.parquet_destination)
        final = extract_folder(settings.export_root, project_slug, extract_name)
        database = _Database(settings, conn)
        published: Path | None = None
        try:
            remove_leftovers(final.parent.parent)
            linked = _build(database, extract, extract_name, final, export_id, lease)
            published = final
            receipt = plugins.export_parquet(
                project, extract_name, final,
                secrets if secrets is not None else open_secret_store(settings), manager,
            )
            _checkpoint("uploaded", export_id)
            lease.check()
        except Exception as exc:  # noqa: BLE001 - every failure ends as a failed row
            error, retryable = _describe_failure(exc)
            database.run(_finish_row, export_id, "failed", export_dir=published, error=error)
            logger.warning("parquet export %d of %s/%s failed: %s",
                           export_id, project_slug, extract_name, error)
            return ExportResult(export_id, project_slug, extract_name, "failed",
                                project.parquet_destination, export_dir=published,
                                error=error, retryable=retryable)
        database.run(_finish_row, export_id, "done", export_dir=final,
                     uploaded_to=receipt.location)
        logger.info("parquet export %d of %s/%s done: %d linked studies, destination %s",
                    export_id, project_slug, extract_name, linked, project.parquet_destination)
        return ExportResult(export_id, project_slug, extract_name, "done",
                            project.parquet_destination, export_dir=final,
                            uploaded_to=receipt.location, linked_studies=linked)
    finally:
        lease.release()


def _checkpoint(step: str, export_id: int) -> None:
    """Each step of the export, once done (the fault tests stop the process here)."""
    logger.debug("parquet export %d: %s", export_id, step)


class LeaseLost(Exception):
    """Another export took the project's lease (ours ran out); this one must stop."""


class ProjectLease:
    """The project's export lease: a row renewed by a thread over connections of its own,
    each new one made when the last failed (PostgreSQL may restart meanwhile)."""

    def __init__(self, settings: Settings, project_slug: str, seconds: float):
        self.settings = settings
        self.project_slug = project_slug
        self.seconds = seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "INSERT INTO parquet_export_leases (project_slug, holder, expires_at)"
            " VALUES (%s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (project_slug) DO UPDATE"
            " SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
            " WHERE parquet_export_leases.expires_at < now()"
            " RETURNING holder",
            (self.project_slug, self.holder, self.seconds),
        ).fetchone()
        if row is None:
            return False
        self._thread = threading.Thread(target=self._renew_until_stopped,
                                        name="pixl-parquet-lease", daemon=True)
        self._thread.start()
        return True

    def check(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(f"the export lease of project {self.project_slug!r} was lost")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._lost.is_set():
            _Database(self.settings).run(
                lambda conn: conn.execute(
                    "DELETE FROM parquet_export_leases WHERE project_slug = %s AND holder = %s",
                    (self.project_slug, self.holder)))

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                with pixl_db.connect(self.settings, autocommit=True) as conn:
                    renewed = conn.execute(
                        "UPDATE parquet_export_leases"
                        " SET expires_at = now() + make_interval(secs => %s)"
                        " WHERE project_slug = %s AND holder = %s",
                        (self.seconds, self.project_slug, self.holder),
                    ).rowcount
            except psycopg.OperationalError:
                continue  # PostgreSQL away: try again at the next beat, the lease still runs
            if not renewed:
                logger.error("parquet export of %s: lease lost", self.project_slug)
                self._lost.set()
                return


class _Database:
    """Runs a write of the export, reconnecting and repeating it (each is idempotent)
    while PostgreSQL is away, for at most DATABASE_PATIENCE_SECONDS."""

    def __init__(self, settings: Settings, conn: psycopg.Connection | None = None):
        self.settings = settings
        self.conn = conn

    def run(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + DATABASE_PATIENCE_SECONDS
        while True:
            try:
                if self.conn is None or self.conn.closed or self.conn.broken:
                    self.conn = pixl_db.connect(self.settings, autocommit=True)
                return write(self.conn, *args, **kwargs)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                time.sleep(1)


def remove_leftovers(project_dir: Path) -> None:
    """Remove what interrupted exports of the project left: hidden staging and old
    folders under `all_extracts/`, temporary `latest` links. Call holding the lease."""
    extracts = project_dir / "all_extracts"
    if extracts.is_dir():
        for path in extracts.iterdir():
            if path.name.startswith(".") and (".partial-" in path.name or ".old-" in path.name):
                shutil.rmtree(path, ignore_errors=True)
    if project_dir.is_dir():
        for path in project_dir.glob(".latest-*"):
            path.unlink(missing_ok=True)


def _build(database: _Database, extract: _Extract, extract_name: str, final: Path,
           export_id: int, lease: ProjectLease) -> int:
    """Steps 1 to 3 of the module's docstring; returns the number of linked studies."""
    public_dir = extract.public_dir
    if public_dir is None or not public_dir.is_dir() or not any(public_dir.rglob("*.parquet")):
        raise MissingPublicFiles(
            f"the public parquet files of extract {extract_name!r} are missing"
            + (f" (expected under {public_dir})" if public_dir else " (none were kept at load)")
        )
    staging = final.with_name(f".{extract_name}.partial-{export_id}")
    try:
        shutil.copytree(public_dir, staging / "omop" / "public")
        rows = database.run(linker_rows, extract.id)
        write_image_linker(rows, staging / "radiology" / LINKER_FILE)
        _sync_tree(staging)
        _checkpoint("built", export_id)
        lease.check()
        _publish(staging, final, export_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _checkpoint("published", export_id)
    _point_latest(final, export_id)
    _checkpoint("linked", export_id)
    return len(rows)


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


def _start_row(conn: psycopg.Connection, project_slug: str, extract_id: int, destination: str) -> int:
    with conn.transaction():
        # We hold the project's lease, so a row still 'running' belongs to a run that died.
        conn.execute(
            "UPDATE parquet_exports SET state = 'failed', finished_at = now(),"
            " error = 'interrupted: the process running this export stopped'"
            " WHERE state = 'running'"
            " AND extract_id IN (SELECT id FROM extracts WHERE project_slug = %s)",
            (project_slug,),
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


def _sync_tree(folder: Path) -> None:
    """Flush the built files to disk before they are published (a power cut after the
    rename must not leave a published tree of empty files)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _publish(staging: Path, final: Path, export_id: int) -> None:
    """Put `staging` in the place of `final` in one step; remove the earlier export."""
    if not final.exists():
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        _checkpoint("exchanged", export_id)
        shutil.rmtree(staging)  # now the earlier export
        return
    # No RENAME_EXCHANGE on this filesystem: a two-step swap (`final` briefly absent).
    old = final.with_name(f".{final.name}.old-{export_id}")
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except OSError:
        os.rename(old, final)
        raise
    shutil.rmtree(old)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where it is not supported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second),
                       _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _point_latest(final: Path, export_id: int) -> None:
    """Atomically point `<slug>/latest` at this extract (a relative link, so that the
    export root can be mounted elsewhere)."""
    project_dir = final.parent.parent
    temporary = project_dir / f".latest-{export_id}"
    temporary.unlink(missing_ok=True)
    os.symlink(Path("all_extracts") / final.name, temporary, target_is_directory=True)
    _checkpoint("link-made", export_id)
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
    if isinstance(exc, LeaseLost):
        return str(exc), True
    if isinstance(exc, psycopg.OperationalError):
        return f"the PIXL database was unreachable ({type(exc).__name__})", True
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"writing the export failed: {exc.strerror or type(exc).__name__}{where}", True
    logger.exception("unexpected failure of a parquet export")
    return f"internal error ({type(exc).__name__}); see the PIXL log", False
