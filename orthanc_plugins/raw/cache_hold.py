"""raw's cache held for anon: backpressure on the archive, and protection from recycling.

raw's Orthanc recycles its oldest studies once it holds `MaximumStorageSize`.
The studies raw holds for anon (transferring, cached, being de-identified) must
never be recycled, and must never outgrow the cache:
- before a C-MOVE, the transfer reserves the study's estimated size
  (`reserve_cache_space`); while the held bytes would pass the hold limit
  (half of raw's maximum storage unless configured) the job waits, unharmed,
  and raw asks the archive for nothing more;
- once cached, the study's patient is protected in Orthanc (protected
  patients are never recycled) and its measured size replaces the estimate;
- once anon has de-identified it, the heartbeat's chore
  (`release_protections`) lifts the protection when no other held study
  of that patient needs it.
The accounting is in the database, per raw server (`raw_node`).
"""

from __future__ import annotations

import logging

import psycopg

from orthanc_plugins.common.orthanc_api import OrthancApi, get_json

logger = logging.getLogger(__name__)

HELD_STATES = ("querying", "retrieving", "cached", "anonymising")
_HELD = ", ".join(f"'{s}'" for s in HELD_STATES)
# Before raw has measured any study of its own, an instance is taken to be this big.
DEFAULT_BYTES_PER_INSTANCE = 1 << 20
# A job that found the cache full is due again after this long.
CACHE_FULL_DELAY_SECONDS = 2.0


class CacheFull(Exception):
    """raw holds as much for anon as it may: the job waits, nothing is counted against it."""


def held_bytes(conn: psycopg.Connection, raw_node: str, *, except_job: int | None = None) -> int:
    """What raw holds for anon: studies in its hands or anon's, and those still protected
    (Orthanc cannot recycle them until `release_protections` has run)."""
    row = conn.execute(
        "SELECT coalesce(sum(raw_bytes), 0) FROM study_jobs WHERE raw_node = %s"
        f" AND (state IN ({_HELD}) OR raw_protected) AND id IS DISTINCT FROM %s",
        (raw_node, except_job),
    ).fetchone()
    return int(row[0])


def bytes_per_instance(conn: psycopg.Connection, raw_node: str) -> int:
    """The mean size of an instance among the last studies this raw measured."""
    row = conn.execute(
        "SELECT sum(raw_bytes), sum(raw_instances) FROM (SELECT raw_bytes, raw_instances FROM study_jobs"
        " WHERE raw_node = %s AND state_times ? 'cached' AND raw_instances > 0 AND raw_bytes > 0"
        " AND state NOT IN ('querying', 'retrieving') ORDER BY updated_at DESC LIMIT 50) recent",
        (raw_node,),
    ).fetchone()
    if not row or not row[1]:
        return DEFAULT_BYTES_PER_INSTANCE
    return max(1, int(row[0]) // int(row[1]))


def reserve_cache_space(conn: psycopg.Connection, job_id: int, owner: str, raw_node: str,
                        instances: int, limit_bytes: int | None) -> bool:
    """Reserve room for a study of `instances` before it is fetched; False: the cache is full.

    One study is always let through when raw holds nothing, however big, or
    a study larger than the limit could never be fetched.
    """
    with conn.transaction():
        # One reservation at a time per raw server, so two never take the same room.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('pixl-raw-hold:' || %s))", (raw_node,))
        expected = instances * bytes_per_instance(conn, raw_node)
        if limit_bytes is not None:
            held = held_bytes(conn, raw_node, except_job=job_id)
            if held > 0 and held + expected > limit_bytes:
                return False
        conn.execute(
            "UPDATE study_jobs SET raw_node = %s, raw_bytes = %s, raw_instances = %s"
            " WHERE id = %s AND lease_owner = %s",
            (raw_node, expected, instances, job_id, owner),
        )
    return True


def over_hold_limit(conn: psycopg.Connection, raw_node: str, limit_bytes: int | None) -> bool:
    """Whether raw already holds its limit for anon (no new transfer should start)."""
    return limit_bytes is not None and held_bytes(conn, raw_node) >= limit_bytes


def protect_study(api: OrthancApi, raw_study_id: str) -> tuple[str, int, int]:
    """Protect the study's patient from recycling; returns (patient ID, bytes, instances) in raw."""
    patient_id = get_json(api, f"/studies/{raw_study_id}")["ParentPatient"]
    api.put(f"/patients/{patient_id}/protected", b"1")
    statistics = get_json(api, f"/studies/{raw_study_id}/statistics")
    return patient_id, int(statistics["DiskSize"]), int(statistics["CountInstances"])


def release_protections(conn: psycopg.Connection, api: OrthancApi, raw_node: str) -> int:
    """Unprotect the patients none of whose studies raw holds for anon any more; returns how many."""
    rows = conn.execute(
        "SELECT DISTINCT j.raw_patient_id FROM study_jobs j WHERE j.raw_node = %(node)s AND j.raw_protected"
        f" AND j.state NOT IN ({_HELD}) AND NOT EXISTS (SELECT 1 FROM study_jobs k"
        "   WHERE k.raw_node = %(node)s AND k.raw_patient_id = j.raw_patient_id"
        f"   AND k.state IN ({_HELD}))",
        {"node": raw_node},
    ).fetchall()
    for (patient_id,) in rows:
        try:
            api.put(f"/patients/{patient_id}/protected", b"0")
        except Exception as exc:  # gone already (deleted by hand): nothing to protect
            logger.info("raw: patient %s could not be unprotected (%s)", patient_id, type(exc).__name__)
        conn.execute(
            f"UPDATE study_jobs SET raw_protected = false WHERE raw_node = %s AND raw_patient_id = %s"
            f" AND state NOT IN ({_HELD})",
            (raw_node, patient_id),
        )
    return len(rows)
