"""raw against an archive that lies: its C-MOVE reports success having sent less
than its C-FIND announced, or nothing (RELIABILITY.md, scenario 7).

The archive is a real Orthanc whose C-MOVE SCP is replaced by a Python plugin
of the test (`lying_archive_plugin.py`); its C-FIND is Orthanc's own, so the
counts raw checks against are true. raw's `vna` modality points at it for the
test's duration.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from stack_support import point_raw_archive_at, start_orthanc
from test_raw_stack import (
    PROJECT,
    cohort,
    conn,
    controls,
    jobs_of,
    put_studies_in_vna,
    upload,
    wait_until_handed_to_anon,
)

from orthanc_plugins.common.settings import OrthancNode
from pixl_stack.render import raw_modalities, render_config

pytestmark = pytest.mark.stack
__all__ = ["conn", "controls"]  # fixtures of test_raw_stack, used here

PLUGIN = Path(__file__).with_name("lying_archive_plugin.py")
MOVE_LINE = re.compile(r"lying archive: (\w+) (\w+) sent (\d+) of (\d+)")


@dataclass
class LyingArchive:
    node: OrthancNode
    mode_file: Path
    log_file: Path

    def lie(self, mode: str) -> None:
        self.mode_file.write_text(mode)

    def moves(self) -> list[tuple[str, str, int, int]]:
        """(level, mode, sent, matched) of every C-MOVE it answered, in order."""
        return [(level, mode, int(sent), int(matched)) for level, mode, sent, matched
                in MOVE_LINE.findall(self.log_file.read_text(errors="replace"))]


@pytest.fixture
def lying_archive(stack, tmp_path: Path) -> Iterator[LyingArchive]:
    settings = stack.settings
    base = int(os.environ["PIXL_PORT_BASE"])
    node = OrthancNode("vna", "LYINGVNA", base + 80, base + 280)
    storage = tmp_path / "lying-archive"
    storage.mkdir()
    archive = LyingArchive(node, tmp_path / "mode", tmp_path / "logs" / "lying-archive.log")
    archive.lie("honest")
    config = render_config("vna", settings, node, storage)
    config.update(Plugins=["/usr/share/orthanc/plugins/libOrthancPython.so"], PythonScript=str(PLUGIN),
                  LyingArchive={"ModeFile": str(archive.mode_file)})
    process = start_orthanc("lying-archive", node, config, settings, tmp_path)
    archive.log_file = process.log_file
    try:
        real_vna = raw_modalities(settings)["vna"]
        point_raw_archive_at(settings, dict(real_vna, AET=node.aet, Port=node.dicom_port))
        yield archive
    finally:
        point_raw_archive_at(settings, raw_modalities(settings)["vna"])
        process.stop()


def _held_by_raw(stack, study_uid: str) -> int:
    found = requests.post(f"{stack.settings.raw.url}/tools/find", auth=stack.settings.orthanc_auth,
                          verify=stack.settings.http_verify, timeout=30,
                          json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}})
    found.raise_for_status()
    return len(found.json())


def _extract_from(archive: LyingArchive, stack, tmp_path: Path, *, series: int, instances: int):
    """A generated study put in the archive, and an extract of it loaded into raw."""
    study, = put_studies_in_vna(replace(stack, settings=replace(stack.settings, vna=archive.node)),
                                tmp_path, 1, series=series, instances=instances)
    return study, upload(stack, cohort([study], PROJECT))


def test_a_move_that_reports_success_one_instance_short_is_completed(
    stack, conn, controls, lying_archive, tmp_path
) -> None:
    lying_archive.lie("short")
    study, summary = _extract_from(lying_archive, stack, tmp_path, series=2, instances=3)
    jobs = wait_until_handed_to_anon(conn, summary)

    assert [j[1] for j in jobs] != ["failed"], jobs
    assert _held_by_raw(stack, study.StudyInstanceUID) == 6
    # The archive said success having sent 5 of 6; raw asked again for the one missing.
    # Within the one attempt: no failed attempt was counted, no C-MOVE repeated.
    assert lying_archive.moves() == [("STUDY", "short", 5, 6), ("INSTANCE", "short", 1, 1)]


def test_a_move_that_reports_success_having_sent_nothing_is_a_failed_attempt(
    stack, conn, controls, lying_archive, tmp_path
) -> None:
    lying_archive.lie("none")
    study, summary = _extract_from(lying_archive, stack, tmp_path, series=1, instances=4)
    deadline = time.monotonic() + 90
    while (job := jobs_of(conn, summary)[0])[2] < 2:
        assert job[1] not in ("cached", "anonymising", "exporting", "exported"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    # Never cached as complete: a retried attempt whose reason says what was missing.
    assert job[1] in ("queued", "querying", "retrieving"), job
    assert "raw holds 0 of the 4 instances vna announced" in job[5], job
    assert _held_by_raw(stack, study.StudyInstanceUID) == 0

    lying_archive.lie("honest")  # the archive mends: the next attempt fetches it all
    jobs = wait_until_handed_to_anon(conn, summary)
    assert jobs[0][1] != "failed", jobs
    assert _held_by_raw(stack, study.StudyInstanceUID) == 4
