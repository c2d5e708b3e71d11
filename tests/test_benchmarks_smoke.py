"""The pipeline benchmark in its smallest mode runs end to end, and its figures add up."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import pytest

from benchmarks.pipeline import JobTimes, stage_sums
from benchmarks.resources import summarise_profile
from orthanc_plugins.common.settings import REPO_ROOT

REQUIRED_KEYS = ("pipeline_per_s", "chain_per_s", "ratio", "raw_peak_rss_mb", "anon_peak_rss_mb",
                 "postgres_peak_rss_mb", "ftps_peak_rss_mb", "growth", "exported")


@pytest.mark.stack
def test_quick_pipeline_benchmark_exports_every_study():
    # The benchmark picks its own ports and state; nothing of the test session's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXL_", "ORTHANC_", "VNA_", "FTPS_"))}
    result = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--quick"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    figures = dict(pair.split("=", 1) for pair in last.split())
    assert set(REQUIRED_KEYS) <= set(figures), last
    assert int(figures["exported"]) == 5  # N = 1 study, then 4N = 4 others
    assert int(figures["instances"]) == 4
    for key in ("pipeline_per_s", "chain_per_s", "ratio", "growth"):
        assert float(figures[key]) > 0, last
    for server in ("raw", "anon", "postgres", "ftps"):
        assert 10 < float(figures[f"{server}_peak_rss_mb"]) < 2000, last
    assert "pipeline N:" in result.stdout and "anonymising -> exporting" in result.stdout


def _at(second: float) -> datetime.datetime:
    return datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=second)


def test_stage_sums_add_consecutive_states_and_bridge_missing_ones():
    full = JobTimes(1, "exported", None, "1.2", {
        "queued": _at(0), "retrieving": _at(1), "cached": _at(4), "anonymising": _at(5),
        "exporting": _at(9), "exported": _at(10)})
    no_cached = JobTimes(2, "exported", None, "1.3", {
        "queued": _at(0), "retrieving": _at(2), "anonymising": _at(6), "exported": _at(8)})
    assert stage_sums([full, no_cached]) == {
        "queued -> retrieving": 3.0, "retrieving -> cached": 3.0, "cached -> anonymising": 1.0,
        "anonymising -> exporting": 4.0, "exporting -> exported": 1.0,
        "retrieving -> anonymising": 4.0, "anonymising -> exported": 2.0,
    }


def test_profile_summary_gives_shares_overall_and_per_thread_entry(tmp_path):
    collapsed = tmp_path / "anon.txt"
    collapsed.write_text(
        "Thread.run (threading.py:9);work (orthanc_plugins/anon/service.py:5);"
        "post (orthanc_plugins/common/plugin_support.py:9);"
        "_call (orthanc_plugins/common/plugin_support.py:20) 3\n"
        "Thread.run (threading.py:9);work (orthanc_plugins/anon/service.py:7);"
        "deidentify (orthanc_plugins/anon/deid/engine.py:3);dcmread (pydicom/filereader.py:1) 1\n"
        "callback (orthanc_plugins/common/plugin_support.py:4);answer (json/__init__.py:2) 1\n"
        " 5\n"
    )
    assert summarise_profile(collapsed, top=2) == [
        "  10 samples (wall time of every Python thread); innermost frames:",
        "     50.0 %  (no Python frame)",
        "     30.0 %  _call (orthanc_plugins/common/plugin_support.py)",
        ("  thread entry work (orthanc_plugins/anon/service.py), 40.0 % of the samples;"
        " of its time, PIXL function -> what it was calling:"),
        "       75.0 %  work (orthanc_plugins/anon/service.py) -> post (orthanc_plugins/common/plugin_support.py)",
        "       25.0 %  deidentify (orthanc_plugins/anon/deid/engine.py) -> dcmread (pydicom/filereader.py)",
        ("  thread entry callback (orthanc_plugins/common/plugin_support.py), 10.0 % of the samples;"
        " of its time, PIXL function -> what it was calling:"),
        "      100.0 %  answer (json/__init__.py)",
    ]
