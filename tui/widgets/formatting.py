"""Small text renderings shared by the screens: progress bars, durations, rates."""

from __future__ import annotations

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
