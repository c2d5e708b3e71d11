"""Date shifting for DA and DT values: every date of a patient moves by the same days."""

from __future__ import annotations

import datetime


def shift_da(value: str, days: int) -> str | None:
    """Move a DA value (YYYYMMDD) back by `days`; None if it is not a valid date."""
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        date = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    try:
        return (date - datetime.timedelta(days=days)).strftime("%Y%m%d")
    except OverflowError:
        return None


def shift_dt(value: str, days: int) -> str | None:
    """Move a DT value back by `days`, keeping its time part; None unless it has a full date."""
    text = value.strip()
    shifted = shift_da(text[:8], days)
    return None if shifted is None else shifted + text[8:]


def shift_values(values: list[str], vr: str, days: int) -> list[str] | None:
    """Shift each value of a (possibly multi-valued) DA/DT element; None if any is invalid."""
    shift = shift_da if vr == "DA" else shift_dt
    out = []
    for value in values:
        if not value.strip():
            out.append(value)
            continue
        shifted = shift(value, days)
        if shifted is None:
            return None
        out.append(shifted)
    return out
