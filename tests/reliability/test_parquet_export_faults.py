"""The parquet export is all or nothing: a process killed (SIGKILL) at each of its steps
leaves `latest` naming a complete extract and the extract's folder complete, and the
next run cleans up and finishes; its lease survives PostgreSQL restarting mid-export."""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.settings import REPO_ROOT
from orthanc_plugins.raw import parquet_export
from orthanc_plugins.raw.parquet_export import (
    LINKER_FILE,
    ParquetExportError,
    ProjectLease,
    extract_folder,
    run_parquet_export,
)
from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.plugins import make_plugin_manager
from pixl_hooks.types import DestinationInfo, ExportReceipt
from pixl_stack.postgres import PostgresCluster
from pixl_stack.stack import settings_environment

SLUG = "demo"
EXTRACT = "2030-01-01t00-00-00"
STEPS = ("built", "exchanged", "published", "link-made", "linked", "uploaded")
KILLED_LEASE_SECONDS = 2


def _projects_with_parquet_destination(folder: Path, destination: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO_ROOT / "projects" / f"{SLUG}.yaml").read_text()
    assert 'parquet: "ftps"' in text
    (folder / f"{SLUG}.yaml").write_text(text.replace('parquet: "ftps"', f'parquet: "{destination}"'))
    shutil.copytree(REPO_ROOT / "projects" / "image-operations", folder / "image-operations")
    return folder


def _settings_for(base, tmp_path: Path, destination: str = "none"):
    return dataclasses.replace(
        base, projects_dir=_projects_with_parquet_destination(tmp_path / "projects", destination),
        tag_rules_dir=REPO_ROOT / "tag_rules",
    )


def _load_extract(conn, tmp_path: Path) -> int:
    """A generated extract of project demo: its public file and three jobs, two exported."""
    public = tmp_path / "kept" / "public"
    (public / "omop").mkdir(parents=True)
    pq.write_table(pa.table({"procedure_occurrence_id": [1, 2, 3], "person_id": [10, 20, 30]}),
                   public / "omop" / "PROCEDURE_OCCURRENCE.parquet")
    extract_id = conn.execute(
        "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind, public_dir)"
        " VALUES (%s, %s, %s, 'omop', %s) RETURNING id",
        (SLUG, EXTRACT, datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC), str(public)),
    ).fetchone()[0]
    for number, state in ((1, "exported"), (2, "exported"), (3, "queued")):
        conn.execute(
            "INSERT INTO study_jobs (extract_id, project_slug, mrn, accession_number, study_uid,"
            " series_uids, study_date, procedure_occurrence_id, state, pseudo_study_uid)"
            " VALUES (%s, %s, %s, %s, %s, '{}', '2020-01-01', %s, %s, %s)",
            (extract_id, SLUG, f"mrn-{number}", f"acc-{number}", f"1.2.3.{number}", number,
             state, f"2.25.{number}"),
        )
    return extract_id


@pytest.fixture
def conn(pixl_settings):
    with pixl_db.connect(pixl_settings, autocommit=True) as connection:
        yield connection


def _linked(folder: Path) -> int:
    return len(pq.read_table(folder / "radiology" / LINKER_FILE))


def _assert_complete(folder: Path) -> None:
    assert folder.is_dir(), f"{folder} is missing"
    assert pq.read_table(folder / "omop/public/omop/PROCEDURE_OCCURRENCE.parquet").num_rows == 3
    _linked(folder)  # a readable linker


def _hidden(project_dir: Path) -> list[str]:
    return sorted(p.name for p in project_dir.rglob(".*"))


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from orthanc_plugins.common import db
    from orthanc_plugins.common.settings import load_settings
    from orthanc_plugins.raw import parquet_export

    kill_at = sys.argv[1]

    def checkpoint(step, export_id):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    parquet_export._checkpoint = checkpoint
    settings = load_settings()
    with db.connect(settings, autocommit=True) as conn:
        parquet_export.run_parquet_export(conn, settings, "demo", sys.argv[2],
                                          lease_seconds=float(sys.argv[3]))
    sys.exit(3)  # not killed: the step was never reached
""")


def _run_killed_at(settings, step: str) -> int:
    env = {**os.environ, **settings_environment(settings)}
    process = subprocess.run([sys.executable, "-c", _KILLED_RUN, step, EXTRACT,
                              str(KILLED_LEASE_SECONDS)],
                             env=env, cwd=REPO_ROOT, capture_output=True, timeout=120,
                             check=False)
    return process.returncode


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_each_step_is_cleaned_up_and_finished_by_the_next(
    conn, pixl_settings, tmp_path, step
):
    settings = _settings_for(pixl_settings, tmp_path)
    extract_id = _load_extract(conn, tmp_path)
    assert run_parquet_export(conn, settings, SLUG, EXTRACT).state == "done"  # an earlier export
    project_dir = settings.export_root / SLUG
    final = extract_folder(settings.export_root, SLUG, EXTRACT)
    conn.execute("UPDATE study_jobs SET state = 'exported' WHERE extract_id = %s", (extract_id,))

    assert _run_killed_at(settings, step) == -9

    # Whatever the step: latest names a complete extract, and the extract is complete.
    latest = project_dir / "latest"
    assert latest.is_symlink() and str(latest.readlink()) == f"all_extracts/{EXTRACT}"
    _assert_complete(latest.resolve())
    _assert_complete(final)
    published = step != "built"  # from the exchange on, the new tree is in place
    assert _linked(final) == (3 if published else 2)

    # The dead run's lease holds until it runs out, then the next run cleans up and finishes.
    with pytest.raises(ParquetExportError, match="already running"):
        run_parquet_export(conn, settings, SLUG, EXTRACT)
    deadline = time.monotonic() + 60
    while True:
        try:
            result = run_parquet_export(conn, settings, SLUG, EXTRACT)
            break
        except ParquetExportError:
            assert time.monotonic() < deadline, "the dead run's lease never ran out"
            time.sleep(0.5)
    assert result.state == "done" and result.linked_studies == 3
    assert _hidden(project_dir) == []
    assert sorted(p.name for p in final.parent.iterdir()) == [EXTRACT]
    _assert_complete(latest.resolve())
    states = conn.execute("SELECT state, error FROM parquet_exports ORDER BY id").fetchall()
    assert [s for s, _ in states] == ["done", "failed", "done"]
    assert states[1][1] == "interrupted: the process running this export stopped"


def test_latest_follows_the_newest_complete_extract_only(conn, pixl_settings, tmp_path):
    """A second extract killed before it was linked leaves latest on the first."""
    settings = _settings_for(pixl_settings, tmp_path)
    first = _load_extract(conn, tmp_path)
    assert run_parquet_export(conn, settings, SLUG, EXTRACT).state == "done"
    conn.execute("UPDATE extracts SET extract_name = 'older' WHERE id = %s", (first,))
    _load_extract(conn, tmp_path / "second")
    os.rename(extract_folder(settings.export_root, SLUG, EXTRACT),
              extract_folder(settings.export_root, SLUG, "older"))
    os.remove(settings.export_root / SLUG / "latest")
    os.symlink("all_extracts/older", settings.export_root / SLUG / "latest")

    assert _run_killed_at(settings, "link-made") == -9

    latest = settings.export_root / SLUG / "latest"
    assert str(latest.readlink()) == "all_extracts/older"
    _assert_complete(latest.resolve())


# --- the lease and PostgreSQL restarting --------------------------------------------------


@pytest.fixture
def private_postgres(pixl_settings, extra_stack_settings):
    """A PostgreSQL of this test's own, that the test may restart."""
    state = Path(os.environ["PIXL_STATE_DIR"]) / f"pg-restart-{uuid.uuid4().hex[:8]}"
    port = extra_stack_settings(pixl_settings, 2, state).pg_port
    cluster = PostgresCluster(state / "pg", port)
    cluster.start()
    settings = dataclasses.replace(pixl_settings, pg_port=port)
    cluster.ensure_role_and_database(settings.pg_user, settings.pg_password, settings.pg_database)
    with pixl_db.connect(settings) as connection:
        pixl_db.migrate(connection)
    yield cluster, settings
    cluster.stop()


class RestartingDestination:
    """A parquet destination whose upload restarts PostgreSQL and, meanwhile, sees
    whether another export of the project could start."""

    def __init__(self, cluster: PostgresCluster, settings):
        self.cluster, self.settings = cluster, settings
        self.concurrent: list[str] = []

    @hookimpl
    def pixl_destinations(self):
        return [DestinationInfo("restarting", dicom=False, parquet=True)]

    @hookimpl
    def pixl_export_parquet(self, project, destination_name, extract_name, parquet_dir, secrets):
        if destination_name != "restarting":
            return None
        self.cluster.stop()
        self.cluster.start()
        with pixl_db.connect(self.settings, autocommit=True) as other:
            try:
                run_parquet_export(other, self.settings, project.slug, extract_name)
                self.concurrent.append("started")
            except ParquetExportError as exc:
                self.concurrent.append(str(exc))
        return ExportReceipt("restarting", location=f"{project.slug}/{extract_name}", files=2)


def test_the_lease_survives_a_postgresql_restart_mid_export(private_postgres, tmp_path):
    cluster, base = private_postgres
    settings = _settings_for(base, tmp_path, destination="restarting")
    destination = RestartingDestination(cluster, settings)
    manager = make_plugin_manager()
    manager.register(destination, name="restarting")
    with pixl_db.connect(settings, autocommit=True) as conn:
        _load_extract(conn, tmp_path)
        result = run_parquet_export(conn, settings, SLUG, EXTRACT, manager=manager)

    assert destination.concurrent == [
        f"an export of project {SLUG!r} is already running (asked for extract {EXTRACT!r})"]
    assert result.state == "done", result.error
    with pixl_db.connect(settings, autocommit=True) as conn:
        assert conn.execute("SELECT state, uploaded_to FROM parquet_exports").fetchall() == [
            ("done", f"{SLUG}/{EXTRACT}")]
        assert conn.execute("SELECT count(*) FROM parquet_export_leases").fetchone()[0] == 0


def test_the_lease_is_renewed_beyond_its_length(conn, pixl_settings):
    lease = ProjectLease(pixl_settings, "renewed", seconds=3)
    assert lease.acquire(conn)
    try:
        time.sleep(7)
        assert not ProjectLease(pixl_settings, "renewed", seconds=3).acquire(conn)
        lease.check()
    finally:
        lease.release()
    after = ProjectLease(pixl_settings, "renewed", seconds=3)
    assert after.acquire(conn)  # released: free at once
    after.release()


def test_checkpoints_name_every_step(monkeypatch, conn, pixl_settings, tmp_path):
    """The steps the kill test stops at are the steps the export goes through."""
    settings = _settings_for(pixl_settings, tmp_path)
    _load_extract(conn, tmp_path)
    assert run_parquet_export(conn, settings, SLUG, EXTRACT).state == "done"
    seen: list[str] = []
    monkeypatch.setattr(parquet_export, "_checkpoint", lambda step, _: seen.append(step))
    assert run_parquet_export(conn, settings, SLUG, EXTRACT).state == "done"
    assert tuple(seen) == STEPS
