"""Shared fixtures: real PostgreSQL and the real native stack, on ports of the tests' own.

The whole session shares one state directory and port range (PIXL_PORT_BASE,
61000 unless set), so a developer's stack on the default ports is never
touched. Everything started here is stopped by PID at the end of the session.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "pixl"

# Set before any PIXL module reads the environment.
_STATE_DIR = Path(tempfile.mkdtemp(prefix="pixl-test-"))
_STATE_DIR.chmod(0o755)  # PostgreSQL runs as 'postgres' and must traverse it
os.environ["PIXL_STATE_DIR"] = str(_STATE_DIR)
os.environ.setdefault("PIXL_PORT_BASE", "61000")
os.environ["PIXL_PROJECTS_DIR"] = str(FIXTURES / "project-configs")
os.environ["PIXL_TAG_RULES_DIR"] = str(FIXTURES / "project-configs" / "tag-operations")

from orthanc_plugins.common import db as pixl_db  # noqa: E402
from orthanc_plugins.common.orthanc_api import HttpOrthanc  # noqa: E402
from orthanc_plugins.common.settings import Settings, load_settings  # noqa: E402
from pixl_stack.postgres import PostgresCluster  # noqa: E402
from pixl_stack.stack import Stack  # noqa: E402

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pixl_fixtures() -> Path:
    """The real inputs of the existing PIXL system (../shared/fixtures/pixl)."""
    assert FIXTURES.is_dir(), f"missing PIXL fixtures at {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def postgres(base_settings: Settings):
    """A private PostgreSQL server for the session (the stack's own, when both are used)."""
    cluster = PostgresCluster(base_settings.state_dir / "pg", base_settings.pg_port)
    cluster.start()
    cluster.ensure_role_and_database(
        base_settings.pg_user, base_settings.pg_password, base_settings.pg_database
    )
    yield cluster
    cluster.stop()


@pytest.fixture
def pixl_settings(postgres: PostgresCluster, base_settings: Settings, tmp_path: Path) -> Settings:
    """Settings pointing at a fresh, migrated PIXL database and a private state dir."""
    name = f"pixl_test_{os.getpid()}_{next(_database_numbers)}"
    postgres.ensure_role_and_database(base_settings.pg_user, base_settings.pg_password, name)
    settings = dataclasses.replace(
        base_settings,
        pg_database=name,
        state_dir=tmp_path / "state",
        export_root=tmp_path / "exports",
        secrets_file=tmp_path / "secrets" / "secrets.json",
    )
    with pixl_db.connect(settings) as conn:
        pixl_db.migrate(conn)
    return settings


@pytest.fixture
def db(pixl_settings: Settings):
    """A connection to the fresh PIXL database of `pixl_settings`."""
    with pixl_db.connect(pixl_settings) as conn:
        yield conn


@dataclasses.dataclass
class RunningStack:
    stack: Stack
    settings: Settings
    raw: HttpOrthanc
    anon: HttpOrthanc
    vna: HttpOrthanc
    dicomweb: HttpOrthanc


@pytest.fixture(scope="session")
def stack(postgres: PostgresCluster, base_settings: Settings):
    """The whole native stack, up for the session, down (by PID) at its end."""
    native = Stack(base_settings)
    native.up()
    auth = base_settings.orthanc_auth
    yield RunningStack(
        stack=native,
        settings=base_settings,
        raw=HttpOrthanc(base_settings.raw.url, auth),
        anon=HttpOrthanc(base_settings.anon.url, auth),
        vna=HttpOrthanc(base_settings.vna.url, auth),
        dicomweb=HttpOrthanc(base_settings.dicomweb_destination.url, auth),
    )
    native.down()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_STATE_DIR, ignore_errors=True)
