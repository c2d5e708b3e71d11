"""The weekly transfer schedule: parsing, what applies when, and the throttle obeying it."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from orthanc_plugins.common import schedules
from orthanc_plugins.raw import throttle
from orthanc_plugins.raw.extracts import ExtractRow, ParsedExtract, extract_name_for, queue_extract

LONDON = ZoneInfo("Europe/London")
CLINICAL_HOURS = {
    "time_zone": "Europe/London",
    "windows": [{"days": "weekdays", "start": "08:00", "end": "20:00",
                 "studies_per_second": 1 / 60, "max_in_flight": 1}],
}


def _at(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=LONDON)


def test_clinical_hours_slow_down_and_the_next_change_is_known():
    schedule = schedules.parse_schedule(CLINICAL_HOURS)

    monday_noon = schedules.limits_at(schedule, _at(2026, 6, 1, 12), 5, 5.0, False)
    assert (monday_noon.max_in_flight, monday_noon.studies_per_second) == (1, 1 / 60)
    assert monday_noon.next_change_at == _at(2026, 6, 1, 20)
    assert monday_noon.window == "mon,tue,wed,thu,fri 08:00-20:00"

    monday_night = schedules.limits_at(schedule, _at(2026, 6, 1, 21), 5, 5.0, False)
    assert (monday_night.max_in_flight, monday_night.studies_per_second, monday_night.window) == (5, 5.0, None)
    assert monday_night.next_change_at == _at(2026, 6, 2, 8)

    friday_night = schedules.limits_at(schedule, _at(2026, 6, 5, 21), 5, 5.0, False)
    assert friday_night.next_change_at == _at(2026, 6, 8, 8)  # the weekend runs at full rate


def test_the_time_zone_is_explicit_and_daylight_saving_is_followed():
    schedule = schedules.parse_schedule(CLINICAL_HOURS)
    # 07:30 UTC is 08:30 in London in summer (inside), 07:30 in winter (outside).
    summer = schedules.limits_at(schedule, datetime.datetime(2026, 6, 1, 7, 30, tzinfo=datetime.UTC), 5, 5.0, False)
    winter = schedules.limits_at(schedule, datetime.datetime(2026, 1, 5, 7, 30, tzinfo=datetime.UTC), 5, 5.0, False)
    assert summer.window is not None and winter.window is None


def test_the_first_listed_window_wins_and_a_window_may_run_to_midnight():
    schedule = schedules.parse_schedule({"time_zone": "UTC", "windows": [
        {"days": ["sat"], "start": "20:00", "end": "24:00", "max_in_flight": 2},
        {"days": "daily", "start": "00:00", "end": "24:00", "max_in_flight": 9},
    ]})
    saturday = datetime.datetime(2026, 6, 6, 22, tzinfo=datetime.UTC)
    assert schedules.limits_at(schedule, saturday, 5, 5.0, False).max_in_flight == 2
    assert schedules.limits_at(schedule, saturday.replace(hour=10), 5, 5.0, False).max_in_flight == 9


@pytest.mark.parametrize(("change", "message"), [
    ({"time_zone": "Mars/Olympus"}, "not an IANA time zone"),
    ({"time_zone": ""}, "time_zone is missing"),
    ({"windows": [{"days": "weekdays", "start": "20:00", "end": "08:00", "max_in_flight": 1}]},
     "window 1: end must be after start"),
    ({"windows": [{"days": ["someday"], "start": "08:00", "end": "09:00", "max_in_flight": 1}]},
     "window 1: unknown day 'someday'"),
    ({"windows": [{"days": "daily", "start": "08:00", "end": "09:00"}]},
     "window 1: give max_in_flight, studies_per_second or both"),
    ({"windows": [{"days": "daily", "start": "8 am", "end": "09:00", "max_in_flight": 1}]},
     "window 1 start: '8 am' is not a time"),
    ({"windows": [{"days": "daily", "start": "08:00", "end": "09:00", "rate": 1}]},
     "window 1: unknown key\\(s\\) rate"),
])
def test_a_bad_schedule_is_one_clear_error(change, message):
    with pytest.raises(schedules.ScheduleError, match=message):
        schedules.parse_schedule(CLINICAL_HOURS | change)


def test_the_throttle_obeys_the_stored_schedule_at_each_claim(conn, pixl_settings):
    generated = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    rows = [ExtractRow(f"mrn{i}", f"acc{i}", f"1.2.{i}", (), None, i) for i in range(5)]
    queue_extract(conn, pixl_settings, ParsedExtract(
        "test-extract-uclh-omop-cdm", extract_name_for(generated), generated, "csv", rows))
    throttle.update_controls(conn, max_in_flight=5, studies_per_second=100)
    now = conn.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(datetime.UTC)
    # A window around now that stops all transfers.
    schedules.store_schedule(conn, schedules.parse_schedule({"time_zone": "UTC", "windows": [{
        "days": "daily", "start": "00:00", "end": "24:00", "max_in_flight": 0}]}))
    job, wait = throttle.claim_transfer_job(conn, "w", 30)
    assert job is None and wait > 0
    assert schedules.effective_limits(conn).next_change_at == datetime.datetime.combine(
        now.date() + datetime.timedelta(days=1), datetime.time(0), datetime.UTC)

    schedules.clear_schedule(conn)
    job, _ = throttle.claim_transfer_job(conn, "w", 30)
    assert job is not None
