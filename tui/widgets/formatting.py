"""Small text renderings shared by the screens: progress bars, durations, rates, times."""

from __future__ import annotations

import datetime

from rich.text import Text

BAR_WIDTH = 12


def progress_bar(fraction: float, *, problems: bool = False, width: int = BAR_WIDTH) -> Text:
    """A bar of block characters with the percentage; green when clean, yellow when
    some studies failed or were not found."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    style = "yellow" if problems else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {fraction * 100:3.0f}%")
    return bar


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def rate(per_minute: float | None) -> str:
    return "—" if per_minute is None else f"{per_minute:.1f}"


def shorten(text: str | None, width: int) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


# Within this distance of now a moment is also shown as "2 min ago" / "in 3 h";
# further away the date says it better.
RELATIVE_WITHIN = datetime.timedelta(hours=48)


def _relative(delta: datetime.timedelta) -> str:
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        amount = "less than a minute" if seconds >= 1 else "now"
    elif seconds < 3600:
        amount = f"{seconds // 60:.0f} min"
    else:
        amount = f"{seconds / 3600:.0f} h"
    if amount == "now":
        return amount
    return f"{amount} ago" if delta.total_seconds() < 0 else f"in {amount}"


def when(iso: str | None, *, now: datetime.datetime | None = None) -> str:
    """A server time (ISO 8601) in the operator's local time, with "2 min ago" when near."""
    if not iso:
        return "—"
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    local = moment.astimezone()
    now = (now or datetime.datetime.now(datetime.UTC)).astimezone()
    shown = local.strftime("%H:%M" if local.date() == now.date() else "%Y-%m-%d %H:%M")
    delta = local - now
    if abs(delta) <= RELATIVE_WITHIN:
        shown += f" ({_relative(delta)})"
    return shown


def pipeline_line(status) -> Text:
    """One line of what holds the pipeline back: anon's backlog, raw's cache, anon's rate."""
    line = Text(f"Waiting for anon: {status.waiting_for_anon} · exporting: {status.exporting} · ")
    used = "?" if status.raw_cache_used_mb is None else f"{status.raw_cache_used_mb:.0f}"
    line.append(f"raw cache {used}/{status.raw_cache_max_mb or '∞'} MB")
    if status.hold_limit_mb:
        held = status.held_for_anon_mb
        line.append(f" (held for anon {held:.0f} of {status.hold_limit_mb} MB)",
                    style="yellow" if held >= status.hold_limit_mb else "")
    line.append(f" · anon {status.anon_instances_per_second:.1f} instances/s")
    for problem in status.problems:
        line.append(f"\n⚠ {problem}", style="bold red")
    return line
