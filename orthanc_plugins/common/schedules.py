"""The weekly schedule of the transfer limits, shared by every raw server
(which obey it) and anon (which reports it in its metrics).

Hospitals keep bulk retrieval out of clinical hours: a schedule is a list of
weekly windows in one explicit IANA time zone, each with its own in-flight
limit and/or rate (for example weekdays 08:00 to 20:00 at one study a
minute). Outside every window the controls (`transfer_controls`, changed
with `pixl-tui controls`) apply. Where windows overlap, the first listed
wins. The throttle calls `effective_limits` at every claim, so every raw
server follows a change of window (or of the schedule) at its next claim.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
DAY_GROUPS = {"weekdays": DAYS[:5], "weekends": DAYS[5:], "daily": DAYS}
MIDNIGHT_END = "24:00"
WINDOW_KEYS = {"days", "start", "end", "max_in_flight", "studies_per_second"}
# Boundaries are looked for this far ahead: a weekly schedule repeats within it.
LOOKAHEAD_DAYS = 8


class ScheduleError(ValueError):
    """An invalid schedule; the message names the window and the key."""


@dataclass(frozen=True)
class Window:
    days: tuple[str, ...]
    start: datetime.time
    end: datetime.time | None  # None: until midnight
    max_in_flight: int | None
    studies_per_second: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "start": _format_time(self.start),
            "end": MIDNIGHT_END if self.end is None else _format_time(self.end),
            "max_in_flight": self.max_in_flight,
            "studies_per_second": self.studies_per_second,
        }

    def describe(self) -> str:
        """When the window runs, e.g. "mon,tue 08:00-20:00" (its limits are shown apart)."""
        end = MIDNIGHT_END if self.end is None else _format_time(self.end)
        return f"{','.join(self.days)} {_format_time(self.start)}-{end}"

    def occurrences(self, day: datetime.date, zone: ZoneInfo) -> tuple[datetime.datetime, datetime.datetime] | None:
        """This window's (start, end) on `day` (aware datetimes), if it runs that day."""
        if DAYS[day.weekday()] not in self.days:
            return None
        start = datetime.datetime.combine(day, self.start, zone)
        if self.end is None:
            end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(0), zone)
        else:
            end = datetime.datetime.combine(day, self.end, zone)
        return start, end


@dataclass(frozen=True)
class Schedule:
    time_zone: str
    windows: tuple[Window, ...]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def as_json(self) -> dict[str, Any]:
        return {"time_zone": self.time_zone, "windows": [w.as_json() for w in self.windows]}


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits that apply at `at`, where they come from, and when they next change."""

    max_in_flight: int
    studies_per_second: float
    paused: bool
    window: str | None  # the window's description, None: the controls apply
    next_change_at: datetime.datetime | None  # None: no schedule, nothing changes by itself
    time_zone: str | None
    in_flight: int = 0  # transfers in flight now, all raw servers

    def as_json(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "studies_per_second": self.studies_per_second,
            "paused": self.paused,
            "window": self.window,
            "next_change_at": self.next_change_at.isoformat() if self.next_change_at else None,
            "time_zone": self.time_zone,
        }


# --- parsing and validation ------------------------------------------------------


def _format_time(value: datetime.time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


def _parse_time(text: Any, where: str) -> datetime.time:
    try:
        value = datetime.time.fromisoformat(str(text))
    except ValueError:
        raise ScheduleError(f"{where}: {text!r} is not a time (HH:MM or HH:MM:SS)") from None
    if value.tzinfo is not None or value.microsecond:
        raise ScheduleError(f"{where}: give a local time without zone or fractions")
    return value


def _parse_days(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ScheduleError(f"{where}: days must be a list such as [\"mon\", \"tue\"] or \"weekdays\"")
    days: list[str] = []
    for item in items:
        name = str(item).lower()
        if name in DAY_GROUPS:
            days.extend(DAY_GROUPS[name])
        elif name in DAYS:
            days.append(name)
        else:
            raise ScheduleError(f"{where}: unknown day {item!r} (mon..sun, weekdays, weekends, daily)")
    return tuple(d for d in DAYS if d in days)


def parse_window(data: Any, index: int) -> Window:
    where = f"window {index + 1}"
    if not isinstance(data, dict):
        raise ScheduleError(f"{where}: must be an object")
    unknown = set(data) - WINDOW_KEYS
    if unknown:
        raise ScheduleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("days", "start", "end"):
        if key not in data:
            raise ScheduleError(f"{where}: {key} is missing")
    start = _parse_time(data["start"], f"{where} start")
    end = None if str(data["end"]) in (MIDNIGHT_END, "24:00:00") else _parse_time(data["end"], f"{where} end")
    if end is not None and end <= start:
        raise ScheduleError(f"{where}: end must be after start (a night window: two windows, to 24:00 and from 00:00)")
    in_flight, rate = data.get("max_in_flight"), data.get("studies_per_second")
    if in_flight is not None and (type(in_flight) is not int or in_flight < 0):
        raise ScheduleError(f"{where}: max_in_flight must be an integer >= 0")
    if rate is not None and (type(rate) not in (int, float) or not rate > 0):
        raise ScheduleError(f"{where}: studies_per_second must be a number > 0")
    if in_flight is None and rate is None:
        raise ScheduleError(f"{where}: give max_in_flight, studies_per_second or both")
    return Window(_parse_days(data["days"], where), start, end, in_flight,
                  None if rate is None else float(rate))


def parse_schedule(data: Any) -> Schedule:
    """A schedule from its JSON form ({"time_zone": ..., "windows": [...]})."""
    if not isinstance(data, dict) or set(data) - {"time_zone", "windows"}:
        raise ScheduleError('a schedule is {"time_zone": "Europe/London", "windows": [...]}')
    zone = data.get("time_zone")
    if not isinstance(zone, str) or not zone:
        raise ScheduleError("time_zone is missing: name an IANA time zone such as Europe/London")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"time_zone {zone!r} is not an IANA time zone") from None
    windows = data.get("windows", [])
    if not isinstance(windows, list):
        raise ScheduleError("windows must be a list")
    return Schedule(zone, tuple(parse_window(w, i) for i, w in enumerate(windows)))


# --- the database ------------------------------------------------------------------


def read_schedule(conn: psycopg.Connection) -> Schedule | None:
    row = conn.execute("SELECT time_zone, windows FROM transfer_schedule").fetchone()
    if row is None:
        return None
    return parse_schedule({"time_zone": row[0], "windows": row[1]})


def store_schedule(conn: psycopg.Connection, schedule: Schedule) -> None:
    conn.execute(
        "INSERT INTO transfer_schedule (time_zone, windows) VALUES (%(zone)s, %(windows)s)"
        " ON CONFLICT (id) DO UPDATE SET time_zone = EXCLUDED.time_zone,"
        " windows = EXCLUDED.windows, updated_at = now()",
        {"zone": schedule.time_zone, "windows": json.dumps(schedule.as_json()["windows"])},
    )


def clear_schedule(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM transfer_schedule")


# --- what applies ------------------------------------------------------------------


def limits_at(
    schedule: Schedule | None, at: datetime.datetime, max_in_flight: int, studies_per_second: float,
    paused: bool,
) -> EffectiveLimits:
    """The limits at `at` (aware), given the controls that apply outside every window."""
    if schedule is None or not schedule.windows:
        return EffectiveLimits(max_in_flight, studies_per_second, paused, None, None,
                               schedule.time_zone if schedule else None)
    zone = schedule.zone
    local_day = at.astimezone(zone).date()
    current: Window | None = None
    boundaries: list[datetime.datetime] = []
    for offset in range(-1, LOOKAHEAD_DAYS):
        day = local_day + datetime.timedelta(days=offset)
        for window in schedule.windows:
            span = window.occurrences(day, zone)
            if span is None:
                continue
            start, end = span
            if current is None and start <= at < end:
                current = window
            boundaries.extend(t for t in span if t > at)
    next_change = min(boundaries) if boundaries else None
    if current is None:
        return EffectiveLimits(max_in_flight, studies_per_second, paused, None, next_change,
                               schedule.time_zone)
    return EffectiveLimits(
        max_in_flight if current.max_in_flight is None else current.max_in_flight,
        studies_per_second if current.studies_per_second is None else current.studies_per_second,
        paused, current.describe(), next_change, schedule.time_zone,
    )


def effective_limits(conn: psycopg.Connection, now: datetime.datetime | None = None) -> EffectiveLimits:
    """The limits that apply now (the controls, or the schedule's window) and when they next change."""
    row = conn.execute(
        "SELECT max_in_flight, studies_per_second, paused, clock_timestamp(), (SELECT count(*)"
        " FROM study_jobs WHERE state IN ('querying', 'retrieving') AND lease_expires_at > now())"
        " FROM transfer_controls"
    ).fetchone()
    if row is None:
        raise RuntimeError("transfer_controls has no row: ensure_controls() was not called")
    limits = limits_at(read_schedule(conn), now or row[3], int(row[0]), float(row[1]), bool(row[2]))
    return dataclasses.replace(limits, in_flight=int(row[4]))
