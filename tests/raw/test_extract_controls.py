"""Priorities, fair turns, cancel, practice runs and --limit, against a real PostgreSQL."""

from __future__ import annotations

import datetime
from collections import Counter

import pytest

from orthanc_plugins.common.job_queue import RetryPolicy
from orthanc_plugins.raw import queue
from orthanc_plugins.raw.extract_controls import (
    CANCELLED_REASON,
    EXPORTED_BEFORE_REASON,
    LoadOptions,
    cancel_extract,
    load_extract,
    set_priority,
)
from orthanc_plugins.raw.extracts import ExtractError, ExtractRow, ParsedExtract, extract_name_for

PROJECT = "test-extract-uclh-omop-cdm"


def _extract(hour: int, n: int, prefix: str) -> ParsedExtract:
    generated = datetime.datetime(2024, 1, 1, hour, tzinfo=datetime.UTC)
    uid_root = sum(map(ord, prefix))  # the same studies under the same prefix, whatever the hour
    rows = [ExtractRow(f"{prefix}-mrn{i}", f"{prefix}-acc{i}", f"1.2.{uid_root}.{i}", (), None, i)
            for i in range(n)]
    return ParsedExtract(PROJECT, extract_name_for(generated), generated, "csv", rows)


def _load(conn, settings, hour: int, n: int, prefix: str, **options) -> dict:
    return load_extract(conn, settings, _extract(hour, n, prefix), LoadOptions(**options))


def _claim_order(conn, count: int) -> list[int]:
    """The extract of each of the next `count` transfer claims."""
    order = []
    for _ in range(count):
        job = queue.claim_next_job(conn, "w", 30)
        assert job is not None
        order.append(job.extract_id)
    return order


def _extract_ids(conn) -> dict[str, int]:
    return {name: i for i, name in conn.execute("SELECT id, extract_name FROM extracts")}


def test_higher_priority_is_claimed_first_and_equal_priorities_take_turns(conn, pixl_settings):
    low = _load(conn, pixl_settings, 1, 6, "low", priority=1)
    a = _load(conn, pixl_settings, 2, 6, "a", priority=3)
    b = _load(conn, pixl_settings, 3, 3, "b", priority=3)
    ids = _extract_ids(conn)
    low_id, a_id, b_id = ids[low["extract"]], ids[a["extract"]], ids[b["extract"]]

    order = _claim_order(conn, 15)

    # The nine studies of priority 3 come first, alternating while both have some...
    assert order[:6] == [a_id, b_id] * 3
    assert order[6:9] == [a_id] * 3
    # ...then priority 1.
    assert order[9:] == [low_id] * 6
    assert queue.claim_next_job(conn, "w", 30) is None


def test_a_priority_changed_while_running_applies_to_the_next_claim(conn, pixl_settings):
    first = _load(conn, pixl_settings, 1, 4, "first", priority=2)
    second = _load(conn, pixl_settings, 2, 4, "second", priority=2)
    ids = _extract_ids(conn)
    assert sorted(_claim_order(conn, 2)) == sorted([ids[first["extract"]], ids[second["extract"]]])

    set_priority(conn, PROJECT, second["extract"], 5)

    assert _claim_order(conn, 3) == [ids[second["extract"]]] * 3
    assert _claim_order(conn, 3) == [ids[first["extract"]]] * 3


def test_fair_turns_measured_over_many_claims(conn, pixl_settings):
    names = [_load(conn, pixl_settings, hour, 40, f"x{hour}", priority=4)["extract"] for hour in (1, 2, 3)]
    ids = _extract_ids(conn)

    order = _claim_order(conn, 60)

    # In every window of three consecutive claims each extract is served once.
    for start in range(0, 60, 3):
        assert sorted(order[start:start + 3]) == sorted(ids[n] for n in names)
    assert Counter(order) == {ids[n]: 20 for n in names}


def test_priority_out_of_range_is_refused(conn, pixl_settings):
    with pytest.raises(ExtractError, match="priority must be 1 to 5"):
        _load(conn, pixl_settings, 1, 1, "p", priority=6)


def test_limit_queues_only_the_first_n_studies_and_a_later_load_adds_the_rest(conn, pixl_settings):
    summary = _load(conn, pixl_settings, 1, 10, "lim", limit=4)
    assert (summary["queued"], summary["studies"], summary["studies_in_extract"]) == (4, 4, 10)
    mrns = [r[0] for r in conn.execute("SELECT mrn FROM study_jobs ORDER BY id")]
    assert mrns == [f"lim-mrn{i}" for i in range(4)]

    again = _load(conn, pixl_settings, 1, 10, "lim")
    assert (again["queued"], again["loaded_before"]) == (6, True)


def test_dry_run_with_options_changes_nothing(conn, pixl_settings):
    summary = load_extract(conn, pixl_settings, _extract(1, 5, "d"), LoadOptions(limit=2, priority=4),
                           dry_run=True)
    assert (summary["queued"], summary["priority"], summary["dry_run"]) == (2, 4, True)
    assert conn.execute("SELECT count(*) FROM extracts").fetchone()[0] == 0


def test_cancel_withdraws_queued_studies_lets_held_ones_finish_and_keeps_exports(conn, pixl_settings):
    summary = _load(conn, pixl_settings, 1, 6, "c")
    held = queue.claim_next_job(conn, "w", 30)  # in flight
    conn.execute("UPDATE study_jobs SET state = 'exported' WHERE id = (SELECT max(id) FROM study_jobs)")

    result = cancel_extract(conn, PROJECT, summary["extract"])

    assert (result.withdrawn, result.in_flight, result.exported) == (4, 1, 1)
    states = dict(conn.execute("SELECT id, state FROM study_jobs"))
    assert states[held.id] == "querying"
    assert Counter(states.values()) == {"skipped": 4, "querying": 1, "exported": 1}
    assert {r[0] for r in conn.execute("SELECT last_error FROM study_jobs WHERE state = 'skipped'")} == {
        CANCELLED_REASON}
    # The held one fails its attempt: it does not come back into the queue.
    queue.schedule_retry(conn, held.id, "w", "C-MOVE failed",
                         RetryPolicy(0, 0, max_attempts=5, give_up_seconds=3600), state="queued")
    assert conn.execute("SELECT state FROM study_jobs WHERE id = %s", (held.id,)).fetchone()[0] == "skipped"
    assert queue.claim_next_job(conn, "w", 30) is None
    # Cancelling again is harmless.
    assert cancel_extract(conn, PROJECT, summary["extract"]).withdrawn == 0


def test_practice_run_counts_nothing_exported_and_a_real_load_replaces_it(conn, pixl_settings):
    real_before = _load(conn, pixl_settings, 1, 2, "shared")
    conn.execute("UPDATE study_jobs SET state = 'exported', pseudo_study_uid = '9.9.' || id")
    practice = load_extract(conn, pixl_settings, _extract(2, 3, "shared"), LoadOptions(practice=True))
    assert (practice["practice"], practice["queued"], practice["already_exported"]) == (True, 1, 2)
    practice_id = _extract_ids(conn)[practice["extract"]]
    states = Counter(r[0] for r in conn.execute(
        "SELECT state FROM study_jobs WHERE extract_id = %s", (practice_id,)))
    assert states == {"queued": 1, "skipped": 2}  # exported before: not counted exported here
    assert {r[0] for r in conn.execute(
        "SELECT last_error FROM study_jobs WHERE extract_id = %s AND state = 'skipped'", (practice_id,))} == {
        EXPORTED_BEFORE_REASON}

    with pytest.raises(ExtractError, match="still has 1 studies on their way"):
        _load(conn, pixl_settings, 2, 3, "shared")
    conn.execute("UPDATE study_jobs SET state = 'skipped' WHERE extract_id = %s", (practice_id,))

    real = _load(conn, pixl_settings, 2, 3, "shared")
    assert (real["practice"], real["queued"], real["already_exported"], real["loaded_before"]) == (
        False, 1, 2, False)
    assert conn.execute("SELECT practice FROM extracts WHERE id = %s", (practice_id,)).fetchone()[0] is False
    with pytest.raises(ExtractError, match="was loaded for real"):
        load_extract(conn, pixl_settings, _extract(1, 2, "shared"), LoadOptions(practice=True))
    assert real_before["extract"] != real["extract"]


def test_the_claim_function_takes_an_extra_condition_over_the_job(conn, pixl_settings):
    # For claims narrowed further (anon's node affinity): the condition comes quoted.
    _load(conn, pixl_settings, 1, 3, "extra", priority=2)
    wanted = conn.execute("SELECT id FROM study_jobs ORDER BY id DESC LIMIT 1").fetchone()[0]
    picked = conn.execute("SELECT pixl_next_job(ARRAY['queued'], false, %s)",
                          (f"j.id = {int(wanted)}",)).fetchone()[0]
    assert picked == wanted
    assert conn.execute("SELECT pixl_next_job(ARRAY['queued'], false, 'false')").fetchone()[0] is None
