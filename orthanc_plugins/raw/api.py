"""raw's REST API under /pixl/ (docs/rest-api.md), as plain functions of an `ApiRequest`.

`RawService.handle` (service.py) sends every request but the health check
here. Answers never show MRNs, accession numbers or source study UIDs: jobs
are named by their internal ID.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests
from psycopg.rows import dict_row

from orthanc_plugins.common import metrics, schedules
from orthanc_plugins.common.hook_events import recent_hook_errors
from orthanc_plugins.common.orthanc_api import OrthancApi, get_json
from orthanc_plugins.common.plugin_support import ApiError, ApiRequest, ApiResponse, health
from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw import cache_hold, extract_controls, queue, report, throttle, vna
from orthanc_plugins.raw.extracts import ExtractError, read_upload
from orthanc_plugins.raw.parquet_export import ParquetExportError, run_parquet_export
from pixl_hooks import plugins

# Throughput is measured over this window of jobs that reached 'cached'.
THROUGHPUT_WINDOW_MINUTES = 10


@dataclass
class ApiContext:
    settings: Settings
    # `with connect() as conn`: an autocommit connection (db.ThreadConnections in raw)
    connect: Callable[[], AbstractContextManager[psycopg.Connection]]
    orthanc: OrthancApi | None = None  # raw's own Orthanc (the VNA routes and the metrics need it)
    # raw's health as its `GET /pixl/health` answers it (with its workers); None: without them
    health_of_raw: Callable[[], dict] | None = None


Route = Callable[[ApiContext, ApiRequest, psycopg.Connection], ApiResponse]


def handle(ctx: ApiContext, request: ApiRequest) -> ApiResponse:
    route = ROUTES.get((request.method, request.path.strip("/")))
    if route is None:
        raise ApiError(404, f"no route {request.method} /pixl/{request.path}")
    with ctx.connect() as conn:
        return route(ctx, request, conn)


# --- extracts -------------------------------------------------------------------


def post_extract(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    dry_run = request.query.get("dry_run", "0").lower() in ("1", "true", "yes")
    with tempfile.TemporaryDirectory(prefix="pixl-upload-") as workdir:
        try:
            extract = read_upload(
                request.body, request.headers.get("content-type", ""),
                Path(request.query.get("filename", "cohort.csv")).name, Path(workdir),
            )
            summary = extract_controls.load_extract(
                conn, ctx.settings, extract, _load_options(request), dry_run=dry_run)
        except ExtractError as exc:
            raise ApiError(400, str(exc)) from None
    return ApiResponse(200, summary)


def _load_options(request: ApiRequest) -> extract_controls.LoadOptions:
    """`limit`, `practice` and `priority` of a load (X-PIXL-Limit ... headers)."""
    def whole_number(name: str) -> int | None:
        text = request.query.get(name, "").strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ExtractError(f"{name} must be a whole number") from None

    return extract_controls.LoadOptions(
        limit=whole_number("limit"),
        practice=request.query.get("practice", "0").lower() in ("1", "true", "yes"),
        priority=whole_number("priority"),
    )


def list_extracts(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    extracts = []
    rows = conn.cursor(row_factory=dict_row).execute(
        "SELECT e.id, e.project_slug AS project, e.extract_name AS extract, e.loaded_at,"
        " e.priority, e.practice, e.cancelled_at FROM extracts e"
        " ORDER BY e.loaded_at, e.id"
    ).fetchall()
    for row in rows:
        extracts.append(_extract_progress(conn, row))
    return ApiResponse(200, {"extracts": extracts})


def _extract_progress(conn: psycopg.Connection, row: dict) -> dict:
    counts = dict(conn.execute(
        "SELECT state, count(*) FROM study_jobs WHERE extract_id = %s GROUP BY state", (row["id"],)
    ).fetchall())
    recent = conn.execute(
        "SELECT count(*) FROM study_jobs WHERE extract_id = %s"
        " AND (state_times->>'cached')::timestamptz > now() - make_interval(mins => %s)",
        (row["id"], THROUGHPUT_WINDOW_MINUTES),
    ).fetchone()[0]
    last = conn.execute(
        "SELECT last_error, updated_at FROM study_jobs WHERE extract_id = %s AND last_error IS NOT NULL"
        " ORDER BY updated_at DESC LIMIT 1", (row["id"],),
    ).fetchone()
    throughput = recent / THROUGHPUT_WINDOW_MINUTES
    remaining = sum(counts.get(s, 0) for s in ("queued", "querying", "retrieving", "cached"))
    return {
        "project": row["project"], "extract": row["extract"], "loaded_at": row["loaded_at"].isoformat(),
        "total": sum(counts.values()), "counts": counts,
        "throughput_per_minute": round(throughput, 2),
        "eta_seconds": _eta_seconds(remaining, throughput),
        "last_error": last[0] if last else None,
        "last_error_at": last[1].isoformat() if last else None,
        "priority": row["priority"], "practice": row["practice"],
        "cancelled_at": row["cancelled_at"].isoformat() if row["cancelled_at"] else None,
    }


def _eta_seconds(remaining: int, per_minute: float) -> int | None:
    if not remaining:
        return 0
    return round(remaining / per_minute * 60) if per_minute else None  # None: no progress to go by


# --- failures -------------------------------------------------------------------


def list_failures(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    conditions, params = _extract_filter(request)
    conditions.append("j.state IN ('failed', 'not_found')")
    rows = conn.cursor(row_factory=dict_row).execute(
        "SELECT j.id AS job_id, j.project_slug AS project, e.extract_name AS extract, j.state,"
        " j.attempts, j.last_error, j.updated_at FROM study_jobs j JOIN extracts e ON e.id = j.extract_id"
        " WHERE " + " AND ".join(conditions) + " ORDER BY j.id",
        params,
    ).fetchall()
    for row in rows:
        row["updated_at"] = row["updated_at"].isoformat()
    return ApiResponse(200, {"failures": rows})


def retry_failures(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    body = _object_body(request)
    if body.get("all") is True:
        retried = queue.retry_failed_jobs(conn, project=body.get("project"), extract=body.get("extract"))
    elif isinstance(body.get("job_ids"), list) and all(isinstance(i, int) for i in body["job_ids"]):
        retried = queue.retry_failed_jobs(conn, job_ids=body["job_ids"])
    else:
        raise ApiError(400, 'send {"job_ids": [1, 2]} or {"all": true, "project"?: slug, "extract"?: name}')
    return ApiResponse(200, {"retried": retried})


# --- controls -------------------------------------------------------------------


def get_controls(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    throttle.ensure_controls(conn, ctx.settings)
    return ApiResponse(200, throttle.read_controls(conn).as_json())


def put_controls(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    body = _object_body(request)
    unknown = set(body) - {"max_in_flight", "studies_per_second", "paused"}
    if unknown:
        raise ApiError(400, f"unknown control(s): {', '.join(sorted(unknown))}")
    max_in_flight = body.get("max_in_flight")
    rate = body.get("studies_per_second")
    paused = body.get("paused")
    if max_in_flight is not None and (type(max_in_flight) is not int or max_in_flight < 0):
        raise ApiError(400, "max_in_flight must be an integer >= 0")
    if rate is not None and (type(rate) not in (int, float) or not rate > 0):
        raise ApiError(400, "studies_per_second must be a number > 0")
    if paused is not None and type(paused) is not bool:
        raise ApiError(400, "paused must be true or false")
    throttle.ensure_controls(conn, ctx.settings)
    controls = throttle.update_controls(
        conn, max_in_flight=max_in_flight, studies_per_second=None if rate is None else float(rate), paused=paused
    )
    return ApiResponse(200, controls.as_json())


def get_schedule(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    throttle.ensure_controls(conn, ctx.settings)
    return ApiResponse(200, _schedule_json(conn))


def _schedule_json(conn: psycopg.Connection) -> dict:
    schedule = schedules.read_schedule(conn)
    return {"schedule": schedule.as_json() if schedule else None,
            "effective": schedules.effective_limits(conn).as_json()}


def put_schedule(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    try:
        schedule = schedules.parse_schedule(_object_body(request))
    except schedules.ScheduleError as exc:
        raise ApiError(400, f"schedule: {exc}") from None
    throttle.ensure_controls(conn, ctx.settings)
    schedules.store_schedule(conn, schedule)
    return ApiResponse(200, _schedule_json(conn))


def delete_schedule(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    throttle.ensure_controls(conn, ctx.settings)
    schedules.clear_schedule(conn)
    return ApiResponse(200, _schedule_json(conn))


# --- an extract's priority, cancel, report ----------------------------------------


def _project_and_extract(values: dict[str, Any]) -> tuple[str, str]:
    project, extract = values.get("project"), values.get("extract")
    if not isinstance(project, str) or not isinstance(extract, str) or not project or not extract:
        raise ApiError(400, "name the extract: project (slug) and extract (name)")
    return project, extract


def put_priority(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    body = _object_body(request)
    project, extract = _project_and_extract(body)
    priority = body.get("priority")
    if type(priority) is not int:
        raise ApiError(400, "priority must be an integer 1 to 5")
    try:
        extract_controls.set_priority(conn, project, extract, priority)
    except extract_controls.ExtractNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except ExtractError as exc:
        raise ApiError(400, str(exc)) from None
    return ApiResponse(200, {"project": project, "extract": extract, "priority": priority})


def cancel_extract(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    project, extract = _project_and_extract(_object_body(request))
    try:
        result = extract_controls.cancel_extract(conn, project, extract)
    except extract_controls.ExtractNotFound as exc:
        raise ApiError(404, str(exc)) from None
    return ApiResponse(200, {"project": project, "extract": extract, **result.as_json()})


def get_report(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    project, extract = _project_and_extract(request.query)
    try:
        answer = report.extract_report(conn, ctx.settings, project, extract)
    except report.ReportNotFound as exc:
        raise ApiError(404, str(exc)) from None
    if request.query.get("format", "json") == "html":
        return ApiResponse(200, report.render_html(answer).encode(), "text/html; charset=utf-8")
    return ApiResponse(200, answer)


# --- the archive, seen from raw (C-ECHO, C-FIND) -----------------------------------


def _raw_orthanc(ctx: ApiContext) -> OrthancApi:
    if ctx.orthanc is None:
        raise ApiError(503, "this route needs raw's Orthanc, which this server was not given")
    return ctx.orthanc


def post_vna_echo(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    return ApiResponse(200, vna.echo(_raw_orthanc(ctx), ctx.settings.vna.name).as_json())


def post_vna_find(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    """C-FIND; the criteria travel in the body, so that no log line of any server holds them."""
    try:
        studies = vna.find(_raw_orthanc(ctx), ctx.settings.vna.name, _object_body(request))
    except vna.VnaQueryError as exc:
        raise ApiError(400, str(exc)) from None
    return ApiResponse(200, {"modality": ctx.settings.vna.name, "studies": studies})


def get_metrics(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    page = metrics.render(conn, ctx.orthanc, "raw", ctx.settings.raw_max_storage_mb * 1024 * 1024)
    return ApiResponse(200, page, metrics.CONTENT_TYPE)


# --- parquet exports and destinations (implemented by other modules) -------------


def start_export(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    body = _object_body(request)
    project, extract = body.get("project"), body.get("extract")
    if not isinstance(project, str) or not isinstance(extract, str):
        raise ApiError(400, 'send {"project": slug, "extract": name}')
    if conn.execute("SELECT 1 FROM extracts WHERE project_slug = %s AND extract_name = %s",
                    (project, extract)).fetchone() is None:
        raise ApiError(404, f"no extract {extract!r} of project {project!r}")
    if conn.execute("SELECT practice FROM extracts WHERE project_slug = %s AND extract_name = %s",
                    (project, extract)).fetchone()[0]:
        raise ApiError(409, f"extract {extract!r} is a practice run: it exports nothing")
    try:
        result = run_parquet_export(conn, ctx.settings, project, extract)
    except ParquetExportError as exc:
        raise ApiError(409, str(exc)) from None
    return ApiResponse(200, _export_rows(conn, ["p.id = %(id)s"], {"id": result.export_id})[0])


def list_exports(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    conditions, params = _extract_filter(request)
    return ApiResponse(200, {"exports": _export_rows(conn, conditions, params)})


def _extract_filter(request: ApiRequest) -> tuple[list[str], dict[str, str]]:
    """SQL conditions (over `extracts e`) for the optional ?project= and ?extract= filters."""
    conditions, params = ["true"], {}
    for key, column in (("project", "e.project_slug"), ("extract", "e.extract_name")):
        if request.query.get(key):
            conditions.append(f"{column} = %({key})s")
            params[key] = request.query[key]
    return conditions, params


def _export_rows(conn: psycopg.Connection, conditions: list[str], params: dict) -> list[dict]:
    rows = conn.cursor(row_factory=dict_row).execute(
        "SELECT p.id AS export_id, e.project_slug AS project, e.extract_name AS extract, p.state,"
        " p.started_at, p.finished_at, p.export_dir, p.destination, p.uploaded_to, p.error"
        " FROM parquet_exports p JOIN extracts e ON e.id = p.extract_id"
        " WHERE " + " AND ".join(conditions) + " ORDER BY p.id",
        params,
    ).fetchall()
    for row in rows:
        for key in ("started_at", "finished_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows


# --- what holds the pipeline back ------------------------------------------------

# anon's throughput is measured over the studies it de-identified in this window.
ANON_RATE_WINDOW_SECONDS = 300


def get_pipeline(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    """Where the pipeline waits: studies waiting for anon, raw's cache against its maximum,
    anon's de-identification rate, and the health problems of raw and anon."""
    counts = dict(conn.execute(
        "SELECT state, count(*) FROM study_jobs WHERE state IN ('cached', 'anonymising', 'exporting')"
        " GROUP BY state").fetchall())
    deidentified = conn.execute(
        "SELECT coalesce(sum(o.instances), 0) FROM anon_outcomes o JOIN study_jobs j ON j.id = o.job_id"
        " WHERE (j.state_times->>'exporting')::timestamptz > clock_timestamp() - make_interval(secs => %s)",
        (ANON_RATE_WINDOW_SECONDS,),
    ).fetchone()[0]
    settings = ctx.settings
    used_mb = None
    if ctx.orthanc is not None:
        used_mb = round(float(get_json(ctx.orthanc, "/statistics")["TotalDiskSizeMB"]), 1)
    limit = settings.raw_hold_limit_bytes
    return ApiResponse(200, {
        "waiting_for_anon": counts.get("cached", 0) + counts.get("anonymising", 0),
        "exporting": counts.get("exporting", 0),
        "raw_cache": {
            "used_mb": used_mb,
            "max_mb": settings.raw_max_storage_mb or None,
            "held_for_anon_mb": round(cache_hold.held_bytes(conn, settings.raw.url) / 2**20, 1),
            "hold_limit_mb": round(limit / 2**20) if limit else None,
        },
        "anon_instances_per_second": round(int(deidentified) / ANON_RATE_WINDOW_SECONDS, 1),
        "problems": _problems("raw", ctx.health_of_raw() if ctx.health_of_raw else health(settings, "raw"))
        + _anon_problems(settings),
    })


def _problems(service: str, answer: dict) -> list[str]:
    return [f"{service}: {problem}" for problem in answer.get("problems", [])]


def _anon_problems(settings: Settings) -> list[str]:
    try:
        response = requests.get(settings.anon.url + "/pixl/health", auth=settings.orthanc_auth, timeout=5)
        return _problems("anon", response.json())
    except (requests.RequestException, ValueError) as exc:
        return [f"anon: unreachable ({type(exc).__name__})"]


def list_destinations(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    return ApiResponse(200, {"destinations": plugins.list_destinations()})


def list_plugins(ctx: ApiContext, request: ApiRequest, conn: psycopg.Connection) -> ApiResponse:
    """Every plugin with its hooks and destinations, and the latest lifecycle hook errors."""
    return ApiResponse(200, {"plugins": plugins.list_plugins(),
                             "hook_errors": recent_hook_errors(conn)})


def _object_body(request: ApiRequest) -> dict:
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "extracts"): post_extract,
    ("GET", "extracts"): list_extracts,
    ("GET", "failures"): list_failures,
    ("POST", "failures/retry"): retry_failures,
    ("GET", "controls"): get_controls,
    ("PUT", "controls"): put_controls,
    ("POST", "exports"): start_export,
    ("GET", "exports"): list_exports,
    ("GET", "destinations"): list_destinations,
    ("GET", "pipeline"): get_pipeline,
    ("GET", "plugins"): list_plugins,
    ("GET", "controls/schedule"): get_schedule,
    ("PUT", "controls/schedule"): put_schedule,
    ("DELETE", "controls/schedule"): delete_schedule,
    ("PUT", "extracts/priority"): put_priority,
    ("POST", "extracts/cancel"): cancel_extract,
    ("GET", "extracts/report"): get_report,
    ("POST", "vna/echo"): post_vna_echo,
    ("POST", "vna/find"): post_vna_find,
    ("GET", "metrics"): get_metrics,
}
