"""`GET /pixl/metrics` of raw and anon, in the Prometheus text format.

Every value is read at scrape time from PostgreSQL (the single source of
truth, so each server shows the whole system's queue, whichever one is
scraped) and from the server's own Orthanc (its storage). Durations come
from the jobs' recorded state times: C-MOVE is `retrieving` to `cached`,
export is `exporting` to `exported`. Labels are project slugs and states,
never an identifying value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orthanc_plugins.common import schedules
from orthanc_plugins.common.job_queue import ALL_STATES
from orthanc_plugins.common.orthanc_api import OrthancApi

CONTENT_TYPE = CONTENT_TYPE_LATEST
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0)
RATE_WINDOW_SECONDS = 600
# Where a job with a last_error is, named as the stage that raised it.
ERROR_STAGES = {
    "queued": "retrieve", "querying": "retrieve", "retrieving": "retrieve", "cached": "handoff",
    "anonymising": "deidentify", "exporting": "export", "failed": "failed", "skipped": "skipped",
}


def _duration_histogram(conn: psycopg.Connection, name: str, documentation: str,
                        start: str, end: str) -> HistogramMetricFamily:
    seconds = (f"extract(epoch FROM (state_times->>'{end}')::timestamptz"
               f" - (state_times->>'{start}')::timestamptz)")
    filters = ", ".join(f"count(*) FILTER (WHERE d <= {b})" for b in DURATION_BUCKETS)
    row = conn.execute(
        f"SELECT {filters}, count(*), coalesce(sum(d), 0) FROM (SELECT {seconds} AS d FROM study_jobs"
        f" WHERE state_times ? '{start}' AND state_times ? '{end}') durations WHERE d >= 0"
    ).fetchone()
    buckets = [(repr(b), int(n)) for b, n in zip(DURATION_BUCKETS, row)]
    buckets.append(("+Inf", int(row[len(DURATION_BUCKETS)])))
    return HistogramMetricFamily(name, documentation, buckets=buckets,
                                 sum_value=float(row[len(DURATION_BUCKETS) + 1]))


def database_metrics(conn: psycopg.Connection) -> Iterator[Metric]:
    """The queue, the limits and the stage timings, from the database."""
    jobs = GaugeMetricFamily("pixl_jobs", "Study jobs by project and state", labels=["project", "state"])
    counts = {(p, s): n for p, s, n in conn.execute(
        "SELECT project_slug, state, count(*) FROM study_jobs GROUP BY 1, 2").fetchall()}
    for project in sorted({p for p, _ in counts}):
        for state in ALL_STATES:
            jobs.add_metric([project, state], counts.get((project, state), 0))
    yield jobs

    if conn.execute("SELECT 1 FROM transfer_controls").fetchone() is not None:
        limits = schedules.effective_limits(conn)
        yield GaugeMetricFamily("pixl_transfers_in_flight", "VNA transfers in flight, all raw servers",
                                value=limits.in_flight)
        yield GaugeMetricFamily("pixl_transfer_limit_in_flight",
                                "In-flight limit that applies now (controls or schedule)",
                                value=limits.max_in_flight)
        yield GaugeMetricFamily("pixl_transfer_limit_studies_per_second",
                                "Rate limit that applies now (controls or schedule)",
                                value=limits.studies_per_second)
        yield GaugeMetricFamily("pixl_transfers_paused", "1 if new transfers are paused",
                                value=int(limits.paused))

    yield _duration_histogram(conn, "pixl_cmove_seconds", "C-MOVE of a study from the VNA to raw",
                              "retrieving", "cached")
    yield _duration_histogram(conn, "pixl_export_seconds", "Export of a study to its destination",
                              "exporting", "exported")

    instances = CounterMetricFamily("pixl_deid_instances", "Instances de-identified, by outcome",
                                    labels=["outcome"])
    outcomes = dict(conn.execute("SELECT outcome, sum(instances) FROM anon_outcomes GROUP BY 1").fetchall())
    for outcome in ("kept", "dropped", "quarantined"):
        instances.add_metric([outcome], int(outcomes.get(outcome, 0)))
    yield instances
    recent = conn.execute(
        "SELECT coalesce(sum(o.instances), 0) FROM anon_outcomes o JOIN study_jobs j ON j.id = o.job_id"
        " WHERE (j.state_times->>'anonymising')::timestamptz > now() - make_interval(secs => %s)",
        (RATE_WINDOW_SECONDS,),
    ).fetchone()[0]
    yield GaugeMetricFamily(
        "pixl_deid_instances_per_second",
        f"Instances de-identified per second over the last {RATE_WINDOW_SECONDS} s",
        value=float(recent) / RATE_WINDOW_SECONDS,
    )

    errors = GaugeMetricFamily("pixl_job_errors", "Jobs carrying an error, by the stage that raised it",
                               labels=["stage"])
    by_state = dict(conn.execute(
        "SELECT state, count(*) FROM study_jobs WHERE last_error IS NOT NULL GROUP BY 1").fetchall())
    for stage in sorted(set(ERROR_STAGES.values())):
        errors.add_metric([stage], sum(n for s, n in by_state.items() if ERROR_STAGES.get(s) == stage))
    yield errors


def storage_metrics(orthanc: OrthancApi, service: str, limit_bytes: int | None) -> Iterator[Metric]:
    """What this server's Orthanc stores (for raw: the cache's use against its limit)."""
    statistics = json.loads(orthanc.get("/statistics"))
    yield GaugeMetricFamily(f"pixl_{service}_storage_bytes", f"Bytes stored by {service}'s Orthanc",
                            value=int(statistics["TotalDiskSize"]))
    yield GaugeMetricFamily(f"pixl_{service}_studies", f"Studies held by {service}'s Orthanc",
                            value=int(statistics["CountStudies"]))
    if limit_bytes is not None:
        yield GaugeMetricFamily(f"pixl_{service}_storage_limit_bytes",
                                f"Most bytes {service}'s Orthanc keeps before recycling", value=limit_bytes)


class _Collected:
    """A prometheus_client collector over metrics already read."""

    def __init__(self, metrics: Iterable[Metric]):
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def render(conn: psycopg.Connection, orthanc: OrthancApi | None, service: str,
           limit_bytes: int | None = None) -> bytes:
    """The whole metrics page of one server."""
    metrics = list(database_metrics(conn))
    if orthanc is not None:
        metrics += storage_metrics(orthanc, service, limit_bytes)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(metrics))
    return generate_latest(registry)
