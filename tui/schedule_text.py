"""Transfer schedules as an operator writes and reads them, one window a line:
`weekdays 08:00-20:00 rate=1/min in-flight=1`. The CLI and the controls
screen both use it; the server validates what it is sent (docs/rest-api.md).
"""

from __future__ import annotations

from typing import Any

from tui.client import EffectiveLimits, InvalidInput, ScheduleWindow
from tui.widgets.formatting import when

RATE_UNITS = {"": 1, "s": 1, "min": 60, "h": 3600}


def parse_window(text: str) -> dict[str, Any]:
    """'weekdays 08:00-20:00 rate=1/min in-flight=1' as the REST API's window object."""
    parts = text.split()
    if len(parts) < 3 or "-" not in parts[1]:
        raise InvalidInput(
            f"window {text!r}: write 'DAYS HH:MM-HH:MM rate=R in-flight=N' (rate or in-flight or both)"
        )
    start, _, end = parts[1].partition("-")
    window: dict[str, Any] = {"days": parts[0].split(","), "start": start, "end": end}
    for setting in parts[2:]:
        key, _, value = setting.partition("=")
        try:
            if key == "rate":
                number, _, unit = value.partition("/")
                per = RATE_UNITS[unit]
                window["studies_per_second"] = float(number) / per
            elif key == "in-flight":
                window["max_in_flight"] = int(value)
            else:
                raise InvalidInput(f"window {text!r}: unknown setting {key!r} (rate, in-flight)")
        except (ValueError, KeyError):
            raise InvalidInput(f"window {text!r}: {setting!r} is not a number (rate: R, R/min, R/h)") from None
    return window


def window_text(window: ScheduleWindow) -> str:
    """A stored window in the form parse_window reads."""
    settings = []
    if window.studies_per_second is not None:
        settings.append(f"rate={_rate_text(window.studies_per_second)}")
    if window.max_in_flight is not None:
        settings.append(f"in-flight={window.max_in_flight}")
    return f"{','.join(window.days)} {window.start}-{window.end} {' '.join(settings)}"


def _rate_text(per_second: float) -> str:
    """0.016666 as 1/min, 5 as 5/s: the unit in which the number is round (else per second)."""
    for unit in ("s", "min", "h"):
        amount = per_second * RATE_UNITS[unit]
        if abs(amount - round(amount)) < 1e-6 and round(amount) >= 1:
            return f"{round(amount)}/{unit}"
    return f"{per_second:g}/s"


def effective_line(limits: EffectiveLimits) -> str:
    """What applies now and when it changes next, in one line."""
    source = (
        f"schedule window {limits.window} ({limits.time_zone})" if limits.window else "the controls"
    )
    state = "paused; " if limits.paused else ""
    line = (
        f"{state}rate {_rate_text(limits.studies_per_second)}, at most {limits.max_in_flight}"
        f" in flight, from {source}"
    )
    if limits.next_change_at:
        line += f"; changes {when(limits.next_change_at)}"
    return line
