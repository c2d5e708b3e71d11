"""The transfer schedule obeyed by two raw servers on one database: the claims'
recorded times show the window's rate, then the full rate once it has ended."""

from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

import pytest
from operator_helpers import archive_studies, cohort_csv, jobs, upload_csv, wait_until_ended

from orthanc_plugins.common import schedules
from orthanc_plugins.raw import throttle

pytestmark = pytest.mark.stack

ZONE = "Europe/London"
WINDOW_SECONDS = 8
WINDOW_RATE = 0.5  # studies per second inside the window
FULL_RATE = 50.0
AFTER_SECONDS = 6  # how long after the switch the full rate is measured


def _db_now(conn) -> datetime.datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _claimed_at(job: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(job["state_times"]["querying"])


def test_two_raw_servers_follow_a_shortened_schedule_across_its_switch(stack, conn, controls, tmp_path):
    throttle.update_controls(conn, max_in_flight=4, studies_per_second=FULL_RATE, paused=False)
    studies = archive_studies(stack.settings, tmp_path, 24, instances=1)
    second = stack.stack.start_raw_instance("s", port_offset=100)
    try:
        local_now = _db_now(conn).astimezone(ZoneInfo(ZONE))
        if local_now.hour == 23 and local_now.minute == 59:  # a window may not cross midnight
            time.sleep(61 - local_now.second)
            local_now = _db_now(conn).astimezone(ZoneInfo(ZONE))
        start = local_now.replace(microsecond=0)
        end = start + datetime.timedelta(seconds=WINDOW_SECONDS)
        schedules.store_schedule(conn, schedules.parse_schedule({"time_zone": ZONE, "windows": [{
            "days": [schedules.DAYS[start.weekday()]], "start": start.strftime("%H:%M:%S"),
            "end": end.strftime("%H:%M:%S"), "studies_per_second": WINDOW_RATE}]}))
        # Start the window with an empty bucket: what it lets through is its rate alone.
        conn.execute("UPDATE transfer_controls SET tokens = 0, tokens_updated_at = clock_timestamp()")
        loaded_at = _db_now(conn)
        summary = upload_csv(stack.settings, cohort_csv(studies, tmp_path))
        assert schedules.effective_limits(conn).next_change_at == end
        ended = wait_until_ended(conn, summary, timeout=240)
        raw_nodes = {row[0] for row in conn.execute(
            "SELECT raw_node FROM study_jobs WHERE id = ANY(%s)", ([j["id"] for j in ended],))}
    finally:
        stack.stack.stop_raw_instance("s")

    assert [j["state"] for j in ended].count("skipped") + [j["state"] for j in ended].count("exported") == 24
    claims = sorted(_claimed_at(j) for j in jobs(conn, summary))
    in_window = [t for t in claims if t < end]
    after_switch = [t for t in claims if end <= t < end + datetime.timedelta(seconds=AFTER_SECONDS)]
    window_span = (end - loaded_at).total_seconds()
    # The window's rate held across both servers (its bucket holds at most one study)...
    assert len(in_window) <= WINDOW_RATE * window_span + 1
    assert len(in_window) >= 1  # ...and it did let studies through
    # ...and after the switch the full rate applied at once: more claims in a few seconds
    # than the window's rate would allow in twice as long.
    assert len(after_switch) > 2 * WINDOW_RATE * AFTER_SECONDS + 1, (len(in_window), len(after_switch))
    print(f"claims: {len(in_window)} in the {window_span:.1f} s window, {len(after_switch)} in {AFTER_SECONDS} s after")
    assert len(claims) == 24
    assert raw_nodes == {stack.settings.raw.url, second.raw.url}  # both servers fetched
