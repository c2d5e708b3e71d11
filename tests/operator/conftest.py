"""Fixtures of the operator-tool tests: a database connection to the session's stack
and its transfer controls and schedule, put back after each test."""

from __future__ import annotations

import pytest

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common import schedules
from orthanc_plugins.raw import throttle


@pytest.fixture
def conn(stack):
    with pixl_db.connect(stack.settings, autocommit=True) as connection:
        yield connection


@pytest.fixture
def controls(stack, conn):
    """The shared controls and schedule, as they were before the test, afterwards."""
    throttle.ensure_controls(conn, stack.settings)
    before = throttle.read_controls(conn)
    yield conn
    schedules.clear_schedule(conn)
    throttle.update_controls(conn, max_in_flight=before.max_in_flight,
                             studies_per_second=before.studies_per_second, paused=False)
