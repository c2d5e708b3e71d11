"""The report of one extract, for the person who answers for it (like the
dicom-pipeline's run overview): what was asked, found, retrieved and
exported; what anon kept, dropped and quarantined and why; where things went;
what failed and why; and progress over time.

As JSON (`extract_report`) and as one self-contained HTML file
(`render_html`: inline style, the chart as inline SVG, nothing fetched).
It holds no identifier: counts, reasons (which name rules and tags, never
values), project and extract names, times.
"""

from __future__ import annotations

import datetime
import html
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orthanc_plugins.common.projects import ProjectConfigError, load_project_by_slug
from orthanc_plugins.common.settings import Settings

END_STATES = ("exported", "not_found", "failed", "skipped")
CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN = 640, 240, 40


class ReportNotFound(LookupError):
    pass


def _reasons(conn: psycopg.Connection, extract_id: int, states: tuple[str, ...]) -> list[dict]:
    rows = conn.execute(
        "SELECT state, coalesce(last_error, ''), count(*) FROM study_jobs"
        " WHERE extract_id = %s AND state = ANY(%s) GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        (extract_id, list(states)),
    ).fetchall()
    return [{"state": s, "reason": r or "(no reason recorded)", "studies": n} for s, r, n in rows]


def _progress(conn: psycopg.Connection, extract_id: int) -> list[dict]:
    """Cumulative studies finished and exported, at each moment one finished."""
    rows = conn.execute(
        "SELECT (state_times->>state)::timestamptz AS at, state FROM study_jobs"
        " WHERE extract_id = %s AND state = ANY(%s) AND state_times ? state ORDER BY 1",
        (extract_id, list(END_STATES)),
    ).fetchall()
    points, exported = [], 0
    for finished, (at, state) in enumerate(rows, start=1):
        exported += state == "exported"
        points.append({"at": at.isoformat(), "finished": finished, "exported": exported})
    return points


def _destinations(settings: Settings, project: str) -> dict[str, str]:
    try:
        config = load_project_by_slug(project, settings.projects_dir, settings.tag_rules_dir)
    except (ProjectConfigError, OSError):
        return {"dicom": "(project file unreadable)", "parquet": "(project file unreadable)"}
    return {"dicom": config.dicom_destination, "parquet": config.parquet_destination}


def extract_report(conn: psycopg.Connection, settings: Settings, project: str, extract: str) -> dict[str, Any]:
    info = conn.cursor(row_factory=dict_row).execute(
        "SELECT id, project_slug AS project, extract_name AS extract, source_kind, generated_at,"
        " loaded_at, priority, practice, cancelled_at FROM extracts"
        " WHERE project_slug = %s AND extract_name = %s", (project, extract),
    ).fetchone()
    if info is None:
        raise ReportNotFound(f"no extract {extract!r} of project {project!r}")
    extract_id = info.pop("id")
    counts = dict(conn.execute(
        "SELECT state, count(*) FROM study_jobs WHERE extract_id = %s GROUP BY 1", (extract_id,)
    ).fetchall())
    requested = sum(counts.values())
    # Found: an archive (or raw's cache) had it; retrieved: it was complete in raw.
    found, retrieved = conn.execute(
        "SELECT count(*) FILTER (WHERE state_times ?| array['retrieving', 'cached']),"
        " count(*) FILTER (WHERE state_times ? 'cached') FROM study_jobs WHERE extract_id = %s",
        (extract_id,),
    ).fetchone()
    outcomes = conn.execute(
        "SELECT o.outcome, o.reason, sum(o.instances) FROM anon_outcomes o"
        " JOIN study_jobs j ON j.id = o.job_id WHERE j.extract_id = %s GROUP BY 1, 2 ORDER BY 3 DESC, 2",
        (extract_id,),
    ).fetchall()
    instances = {"received": sum(int(n) for _, _, n in outcomes), "kept": 0, "dropped": 0, "quarantined": 0}
    reasons: dict[str, list[dict]] = {"dropped": [], "quarantined": []}
    for outcome, reason, n in outcomes:
        instances[outcome] += int(n)
        if outcome in reasons:
            reasons[outcome].append({"reason": reason, "instances": int(n)})
    exports = conn.cursor(row_factory=dict_row).execute(
        "SELECT state, finished_at, destination, uploaded_to, error FROM parquet_exports"
        " WHERE extract_id = %s ORDER BY id", (extract_id,),
    ).fetchall()
    for key in ("generated_at", "loaded_at", "cancelled_at"):
        info[key] = info[key].isoformat() if info[key] else None
    for row in exports:
        row["finished_at"] = row["finished_at"].isoformat() if row["finished_at"] else None
    return {
        "extract": info,
        "generated_report_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "studies": {
            "requested": requested,
            "found": found,
            "not_found": counts.get("not_found", 0),
            "retrieved": retrieved,
            "exported": counts.get("exported", 0),
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "on_their_way": requested - sum(counts.get(s, 0) for s in END_STATES),
        },
        "states": counts,
        "instances": instances,
        "instance_reasons": reasons,
        "destinations": _destinations(settings, project),
        "parquet_exports": exports,
        "failures": _reasons(conn, extract_id, ("failed", "not_found")),
        "skipped": _reasons(conn, extract_id, ("skipped",)),
        "progress": _progress(conn, extract_id),
    }


# --- HTML ----------------------------------------------------------------------------


def _chart_svg(points: list[dict], total: int) -> str:
    """Cumulative finished and exported studies over time, as inline SVG."""
    width, height, margin = CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60" role="img">'
                '<text x="10" y="35">No study has finished yet.</text></svg>')
    times = [datetime.datetime.fromisoformat(p["at"]).timestamp() for p in points]
    start, span = times[0], max(times[-1] - times[0], 1.0)
    top = max(total, 1)

    def xy(t: float, n: int) -> str:
        x = margin + (t - start) / span * (width - 2 * margin)
        y = height - margin - n / top * (height - 2 * margin)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for key, colour in (("finished", "#555"), ("exported", "#1a7f37")):
        path = " ".join(xy(t, p[key]) for t, p in zip(times, points))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
    elapsed = f"+{span:.0f} s" if span < 120 else f"+{span / 60:.0f} min"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        ' aria-label="Studies finished and exported over time">'
        f'<rect x="{margin}" y="{margin}" width="{width - 2 * margin}" height="{height - 2 * margin}"'
        ' fill="none" stroke="#ccc"/>'
        + "".join(lines)
        + f'<text x="{margin}" y="{height - 12}" font-size="12">{_moment(points[0]["at"])}</text>'
        f'<text x="{width - margin}" y="{height - 12}" font-size="12" text-anchor="end">{elapsed}</text>'
        f'<text x="{margin - 6}" y="{margin + 4}" font-size="12" text-anchor="end">{top}</text>'
        f'<text x="{margin - 6}" y="{height - margin}" font-size="12" text-anchor="end">0</text>'
        f'<text x="{margin + 8}" y="{margin + 16}" font-size="12" fill="#555">finished</text>'
        f'<text x="{margin + 80}" y="{margin + 16}" font-size="12" fill="#1a7f37">exported</text>'
        "</svg>"
    )


def _moment(iso: str | None) -> str:
    """A recorded time, to the second, in UTC (the reader may be anywhere)."""
    if not iso:
        return "-"
    moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(headers: tuple[str, ...] | None, rows: list[tuple]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "" if headers is None else (
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>")
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 60em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
td:last-child { text-align: right; } .note { color: #555; }
.practice { background: #fff4ce; padding: 0.5em; border: 1px solid #e0c060; }
"""


def render_html(report: dict[str, Any]) -> str:
    info, studies, instances = report["extract"], report["studies"], report["instances"]
    title = f"PIXL extract report: {info['project']} / {info['extract']}"
    notes = []
    if info["practice"]:
        notes.append('<p class="practice">Practice run: studies were fetched and de-identified,'
                     " nothing was exported.</p>")
    if info["cancelled_at"]:
        notes.append(f"<p class=\"practice\">Cancelled at {_moment(info['cancelled_at'])}.</p>")
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        *notes,
        _table(None, [
            ("source", info["source_kind"]), ("extract generated", _moment(info["generated_at"])),
            ("loaded", _moment(info["loaded_at"])), ("priority", info["priority"]),
            ("report made", _moment(report["generated_report_at"])),
        ]),
        "<h2>Studies</h2>",
        _table(("", "studies"), [(k.replace("_", " "), v) for k, v in studies.items()]),
        "<h2>Instances</h2>",
        _table(("", "instances"), list(instances.items())),
        "<h3>Dropped, by reason</h3>",
        _table(("reason", "instances"), [(r["reason"], r["instances"]) for r in report["instance_reasons"]["dropped"]]),
        "<h3>Quarantined, by reason</h3>",
        _table(("reason", "instances"),
               [(r["reason"], r["instances"]) for r in report["instance_reasons"]["quarantined"]]),
        "<h2>Where things went</h2>",
        _table(("", "destination"), list(report["destinations"].items())),
        _table(("parquet export", "finished", "uploaded to", "error"),
               [(e["state"], _moment(e["finished_at"]), e["uploaded_to"] or "-", e["error"] or "")
                for e in report["parquet_exports"]]),
        "<h2>Failures and their reasons</h2>",
        _table(("state", "reason", "studies"), [(f["state"], f["reason"], f["studies"]) for f in report["failures"]]),
        "<h2>Skipped and why</h2>",
        _table(("state", "reason", "studies"), [(f["state"], f["reason"], f["studies"]) for f in report["skipped"]]),
        "<h2>Progress over time</h2>",
        _chart_svg(report["progress"], studies["requested"]),
        '<p class="note">This report holds no identifier: counts, reasons and times only.</p>',
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
