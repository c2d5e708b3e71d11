"""Shared fixtures: real PostgreSQL and the real native stack, on ports of the tests' own.

The whole session shares one state directory and port range (PIXL_PORT_BASE,
picked free unless set), so a developer's stack on the default ports is never
touched. Everything started here is stopped by PID at the end of the session.

Inputs: the session writes its own, in PIXL's formats (`pixl_inputs.py`), and its
stack reads their projects: the repository's `projects/` and `tag_rules/` plus the
test projects. PIXL's original sample files are an extra compatibility check, read
from PIXL_COMPAT_FIXTURES (default `../shared/fixtures/pixl` beside the repository);
tests that need them are skipped, with the reason, where that folder is absent.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from pixl_inputs import REPO_ROOT, write_pixl_inputs

from pixl_stack.processes import port_free

# A relative PIXL_COMPAT_FIXTURES is relative to the repository, as its default.
COMPAT_FIXTURES = REPO_ROOT / os.environ.get("PIXL_COMPAT_FIXTURES", "../shared/fixtures/pixl")

# Set before any PIXL module reads the environment.
_STATE_DIR = Path(tempfile.mkdtemp(prefix="pixl-test-"))
_STATE_DIR.chmod(0o755)  # PostgreSQL runs as 'postgres': its cluster stays in here
os.environ["PIXL_STATE_DIR"] = str(_STATE_DIR)
_INPUTS = write_pixl_inputs(_STATE_DIR / "inputs")


def _free_port_base() -> int:
    """A port range of our own: test sessions may run side by side on one machine.

    A base B holds three windows of 1000 ports: B for the session's stack,
    B+1000 and B+2000 for the stacks that single tests start (see
    `extra_stack_settings`); each window uses offsets 21..445.
    """
    # 142/342: a second raw; 143/343: a second anon; 442/443/542/543: Orthanc's own HTTP
    # behind the HTTPS fronts.
    offsets = (21, 42, 43, 44, 45, 142, 143, 242, 243, 244, 245, 342, 343, 432, 442, 443, 542, 543)
    # Below Linux's ephemeral range (32768 and up), where any outgoing connection may
    # take a port between our check and our servers' start; and off the default 28000.
    bases = list(range(10000, 26000, 3000))
    first = os.getpid() % len(bases)
    for base in bases[first:] + bases[:first]:
        if all(port_free(base + window + o) for window in (0, 1000, 2000) for o in offsets):
            return base
    raise RuntimeError("no free port range for the test stack")


if "PIXL_PORT_BASE" not in os.environ:  # (setdefault would search even when set)
    os.environ["PIXL_PORT_BASE"] = str(_free_port_base())
os.environ["PIXL_PROJECTS_DIR"] = str(_INPUTS / "project-configs")
os.environ["PIXL_TAG_RULES_DIR"] = str(_INPUTS / "project-configs" / "tag-operations")
# raw's queue timings, short so that tests of crashes and outages take seconds (raw tests).
os.environ.setdefault("PIXL_JOB_LEASE_SECONDS", "4")
os.environ.setdefault("PIXL_RETRY_BASE_SECONDS", "0.5")
os.environ.setdefault("PIXL_RETRY_MAX_SECONDS", "2")
os.environ.setdefault("PIXL_MAX_ATTEMPTS", "30")
# raw and anon speak HTTPS with a certificate of the session's own CA (made by the
# stack): every client verifies with it, plain `requests` calls of tests too.
os.environ["REQUESTS_CA_BUNDLE"] = str(_STATE_DIR / "tls" / "ca.pem")

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.orthanc_api import HttpOrthanc
from orthanc_plugins.common.secrets import destination_secret_name, open_secret_store
from orthanc_plugins.common.settings import Settings, load_settings
from pixl_stack.postgres import PostgresCluster
from pixl_stack.stack import Stack

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pixl_fixtures() -> Path:
    """PIXL's original sample files (PIXL_COMPAT_FIXTURES); the test is skipped without them."""
    if not (COMPAT_FIXTURES / "project-configs").is_dir():
        pytest.skip(f"PIXL's original files are not at {COMPAT_FIXTURES.resolve()} "
                    "(set PIXL_COMPAT_FIXTURES to check compatibility with them)")
    return COMPAT_FIXTURES


@pytest.fixture(scope="session")
def generated_inputs() -> Path:
    """The session's own inputs, in the layout of PIXL's sample folder (`pixl_inputs.py`);
    its project-configs are the session stack's projects. Read only: copy to change."""
    return _INPUTS


@pytest.fixture(params=["generated", "pixl-originals"])
def pixl_format_inputs(request, generated_inputs: Path) -> Path:
    """The same test on both: the generated inputs, then PIXL's originals (where present)."""
    if request.param == "generated":
        return generated_inputs
    return request.getfixturevalue("pixl_fixtures")


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def postgres(base_settings: Settings):
    """A private PostgreSQL server for the session (the stack's own, when both are used)."""
    cluster = PostgresCluster.for_state_dir(base_settings.state_dir, base_settings.pg_port)
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


def _extra_stack_settings(base: Settings, window: int, state_dir: Path, **changes) -> Settings:
    port_base = int(os.environ["PIXL_PORT_BASE"]) + 1000 * window

    def moved(node, offset):
        return dataclasses.replace(node, http_port=port_base + offset, dicom_port=port_base + 200 + offset)

    return dataclasses.replace(
        base, state_dir=state_dir, pg_port=port_base + 432,
        raw=moved(base.raw, 42), anon=moved(base.anon, 43), vna=moved(base.vna, 44),
        dicomweb_destination=moved(base.dicomweb_destination, 45),
        ftps_port=port_base + 21, export_root=state_dir / "exports",
        secrets_file=state_dir / "secrets" / "secrets.json", **changes,
    )


@pytest.fixture(scope="session")
def extra_stack_settings():
    """`make(base, window, state_dir, **changes)`: settings of a second stack in port
    window 1 or 2 of the session's range, with its state under `state_dir`."""
    return _extra_stack_settings


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
    try:
        native.up()
    except BaseException:
        native.down()  # nothing half-started outlives the session
        raise
    # The test projects name their secrets "test" (azure_kv_alias): send them to the
    # stack's own FTPS and DICOMweb servers.
    secrets = open_secret_store(base_settings)
    for service, values in native.development_destination_settings().items():
        for name, value in values.items():
            secrets.set(destination_secret_name("test", service, name), value)
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
    if exitstatus == 0:
        shutil.rmtree(_STATE_DIR, ignore_errors=True)
    else:  # keep the servers' logs for whoever reads the failure
        print(f"\nPIXL test state (logs of every server) kept in {_STATE_DIR}")
