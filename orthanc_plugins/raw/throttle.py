"""The archive's protection, shared by every raw instance through PostgreSQL.

`transfer_controls` holds one row: the in-flight limit (a semaphore of VNA
transfers), the rate (a token bucket of studies per second), and a pause
switch. Taking a transfer slot locks that row, counts live transfers, takes a
token and claims a job in one transaction, so the limits hold across
instances, and a change made while running applies to the next claim.

A transfer is "in flight" while its job is querying or retrieving under a
live lease; a job whose holder died stops counting when its lease runs out.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from orthanc_plugins.common import schedules
from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw.cache_hold import over_hold_limit
from orthanc_plugins.raw.queue import StudyJob, claim_next_job


@dataclass(frozen=True)
class TransferControls:
    max_in_flight: int
    studies_per_second: float
    paused: bool
    in_flight: int

    def as_json(self) -> dict:
        return {
            "max_in_flight": self.max_in_flight, "studies_per_second": self.studies_per_second,
            "paused": self.paused, "in_flight": self.in_flight,
        }


def bucket_capacity(studies_per_second: float) -> float:
    """At most one second's worth of studies may start at once (and at least one)."""
    return max(1.0, studies_per_second)


def ensure_controls(conn: psycopg.Connection, settings: Settings) -> None:
    """Create the controls row from the settings' defaults, once; a running system keeps its own."""
    conn.execute(
        "INSERT INTO transfer_controls (max_in_flight, studies_per_second) VALUES (%s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (settings.max_transfers_in_flight, settings.studies_per_second),
    )


_IN_FLIGHT = (
    "SELECT count(*) FROM study_jobs"
    " WHERE state IN ('querying', 'retrieving') AND lease_expires_at > now()"
)
# While claiming, counting past the limit is wasted work. now() (the start of
# the claim's transaction) lets the index bound the scan, and errs on the safe
# side: a lease that ran out during the claim still counts.
_IN_FLIGHT_UP_TO = (
    "SELECT count(*) FROM (SELECT 1 FROM study_jobs"
    " WHERE state IN ('querying', 'retrieving') AND lease_expires_at > now()"
    " LIMIT %s) live"
)


def read_controls(conn: psycopg.Connection) -> TransferControls:
    row = conn.execute(
        f"SELECT max_in_flight, studies_per_second, paused, ({_IN_FLIGHT}) FROM transfer_controls"
    ).fetchone()
    if row is None:
        raise RuntimeError("transfer_controls has no row: ensure_controls() was not called")
    return TransferControls(int(row[0]), float(row[1]), bool(row[2]), int(row[3]))


def update_controls(
    conn: psycopg.Connection,
    *,
    max_in_flight: int | None = None,
    studies_per_second: float | None = None,
    paused: bool | None = None,
) -> TransferControls:
    """Change the limits while running; the next claim of any instance obeys them."""
    if max_in_flight is not None and max_in_flight < 0:
        raise ValueError("max_in_flight must be >= 0")
    if studies_per_second is not None and not studies_per_second > 0:
        raise ValueError("studies_per_second must be > 0")
    # Tokens are clamped to the new rate's bucket, so lowering the rate never
    # lets a burst saved up under the old one through.
    conn.execute(
        "UPDATE transfer_controls SET"
        " max_in_flight = coalesce(%(m)s, max_in_flight),"
        " studies_per_second = coalesce(%(r)s, studies_per_second),"
        " paused = coalesce(%(p)s, paused),"
        " tokens = least(tokens, greatest(1.0, coalesce(%(r)s, studies_per_second)))",
        {"m": max_in_flight, "r": studies_per_second, "p": paused},
    )
    return read_controls(conn)


def claim_transfer_job(
    conn: psycopg.Connection,
    owner: str,
    lease_seconds: float,
    *,
    max_crashes: int = 2,
    raw_node: str | None = None,
    hold_limit_bytes: int | None = None,
) -> tuple[StudyJob | None, float]:
    """Claim a job for a VNA transfer if the limits allow it now.

    With `raw_node`, nothing is claimed while that raw holds `hold_limit_bytes`
    of studies for anon (backpressure: anon is behind, see `cache_hold`).
    Returns (job, 0) or (None, seconds worth waiting before asking again).
    """
    if raw_node is not None and over_hold_limit(conn, raw_node, hold_limit_bytes):
        return None, 1.0
    with conn.transaction():
        row = conn.execute(
            "SELECT tokens, extract(epoch FROM clock_timestamp() - tokens_updated_at)"
            " FROM transfer_controls FOR UPDATE"
        ).fetchone()
        # The controls, or the weekly schedule's window that applies now (schedules.py).
        limits = schedules.effective_limits(conn)
        max_in_flight, rate, paused = limits.max_in_flight, limits.studies_per_second, limits.paused
        tokens = min(bucket_capacity(rate), float(row[0]) + rate * float(row[1]))
        if paused or max_in_flight == 0:
            return None, 1.0
        if conn.execute(_IN_FLIGHT_UP_TO, (max_in_flight,)).fetchone()[0] >= max_in_flight:
            return None, 0.2
        if tokens < 1.0:
            return None, (1.0 - tokens) / rate
        job = claim_next_job(conn, owner, lease_seconds, max_crashes)
        if job is None:
            return None, 1.0
        conn.execute(
            "UPDATE transfer_controls SET tokens = %s, tokens_updated_at = clock_timestamp()",
            (tokens - 1.0,),
        )
        return job, 0.0


def refund_token(conn: psycopg.Connection) -> None:
    """Give back the token of a claim that caused no VNA traffic (the study was cached)."""
    conn.execute(
        "UPDATE transfer_controls SET tokens = least(greatest(1.0, studies_per_second), tokens + 1)"
    )
