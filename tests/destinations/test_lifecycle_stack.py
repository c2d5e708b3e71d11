"""Lifecycle hooks on a real run: a stack of its own whose raw and anon have the example
plugin package installed, extracts loaded through raw's REST API, studies from the VNA.

Project `hooks-demo` exports through the example destination and its hooks note what
they are told; project `hooks-broken` has the example's hooks raise.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
import yaml
from destination_support import install_example_package

from orthanc_plugins.common.orthanc_api import HttpOrthanc, get_json
from orthanc_plugins.common.secrets import destination_secret_name, open_secret_store
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack import studygen
from pixl_stack.dcmtk import storescu
from pixl_stack.demo import wait_for
from pixl_stack.stack import Stack
from tui import cli
from tui.client import ClientConfig, RawClient, prepare_upload

pytestmark = pytest.mark.stack

GOOD, BROKEN = "hooks-demo", "hooks-broken"
EXTRACT = "2026-11-02t10-00-00"
WAIT_SECONDS = 300


def _project_file(folder: Path, name: str) -> None:
    config = yaml.safe_load((REPO_ROOT / "projects" / "demo.yaml").read_text())
    config["project"]["name"] = name
    config["destination"] = {"dicom": "example-folder", "parquet": "none"}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))


def _cohort(path: Path, project: str, studies: list[studygen.GeneratedStudy]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["procedure_id", "mrn", "accession_number", "project_name",
                     "extract_generated_timestamp", "study_date", "study_uid", "participant_id"])
    for index, study in enumerate(studies, start=1):
        writer.writerow([index, study.patient.mrn, study.accession, project, "2026-11-02T10:00:00Z",
                         study.study_date.isoformat(), study.study_uid, ""])
    path.write_text(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def hook_run(base_settings, extra_stack_settings):
    work = base_settings.state_dir / "lifecycle-stack"  # PostgreSQL must traverse its parents
    projects = work / "projects"
    projects.mkdir(parents=True)
    (projects / "image-operations").symlink_to(REPO_ROOT / "projects" / "image-operations")
    _project_file(projects, GOOD)
    _project_file(projects, BROKEN)
    settings = extra_stack_settings(base_settings, 1, work / "state", projects_dir=projects,
                                    tag_rules_dir=REPO_ROOT / "tag_rules")
    stack = Stack(settings)
    with pytest.MonkeyPatch.context() as patch:
        # As a site installs its plugin: into the environment raw and anon import from.
        patch.setenv("PYTHONPATH", str(install_example_package(work)))
        try:
            stack.up()
            received = work / "received"
            secrets = open_secret_store(settings)
            for project in (GOOD, BROKEN):
                secrets.set(destination_secret_name(project, "example", "folder"), str(received))
            secrets.set(destination_secret_name(BROKEN, "example", "fail-hooks"), "yes")

            studies = [
                studygen.write_generated_study(
                    studygen.StudySpec(modality="DX", series=1, instances_per_series=2, seed=seed),
                    studygen.make_patient(seed), work / f"study-{seed}")
                for seed in (8101, 8102, 8103, 8104)
            ]
            for study in studies[:3]:  # the fourth is not in the VNA: it ends not_found
                storescu(study.files, settings.vna)
            client = RawClient(ClientConfig(settings.raw.url, *settings.orthanc_auth))
            keys = set()
            for project, chosen in ((GOOD, [studies[0], studies[1], studies[3]]),
                                    (BROKEN, [studies[2]])):
                upload = prepare_upload(_cohort(work / f"{project}.csv", project, chosen))
                loaded = client.load_extract(upload, dry_run=False)
                keys.add(f"{loaded.project}/{loaded.extract}")
            statuses = {s.project: s for s in wait_for(client, keys, lambda _: None, WAIT_SECONDS)}
            yield settings, stack, client, received, statuses
        finally:
            stack.down()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _eventually(read, timeout: float = WAIT_SECONDS):
    """What `read()` answers once it is truthy (anon announces an extract whose last study
    ended in raw on its next idle round)."""
    deadline = time.monotonic() + timeout
    while not (answer := read()):
        assert time.monotonic() < deadline, "not announced in time"
        time.sleep(0.5)
    return answer


def test_both_hooks_fire_through_the_installed_plugin(hook_run):
    _, _, _, received, statuses = hook_run
    assert statuses[GOOD].counts == {"exported": 2, "not_found": 1}

    finished = _eventually(lambda: _lines(received / GOOD / "finished-extracts.jsonl"))
    studies = _lines(received / GOOD / "exported-studies.jsonl")

    assert finished == [{"extract": EXTRACT, "studies": 3, "exported": 2, "not_found": 1,
                         "failed": 0, "skipped": 0}]
    zips = sorted(p.stem for p in (received / GOOD).glob("*.zip"))
    assert sorted(s["pseudo_study_uid"] for s in studies) == zips and len(zips) == 2
    for study in studies:
        assert study["extract_name"] == EXTRACT
        assert study["receipt"]["destination"] == "example-folder"
        assert study["receipt"]["files"] == 2
        assert study["procedure_occurrence_id"] in (1, 2)
    assert len({s["job_id"] for s in studies}) == 2


def test_a_raising_hook_is_recorded_and_shown_and_the_study_stays_exported_once(
    hook_run, capsys
):
    settings, _, client, received, statuses = hook_run
    assert statuses[BROKEN].counts == {"exported": 1}
    assert len(list((received / BROKEN).glob("*.zip"))) == 1

    def with_both_errors():
        answer = client.plugins()
        return answer if len([e for e in answer.hook_errors if e.project == BROKEN]) == 2 else None

    listing = _eventually(with_both_errors)
    errors = sorted((e.hook, e.plugin, e.extract, e.error) for e in listing.hook_errors
                    if e.project == BROKEN)
    assert errors == [
        ("pixl_extract_finished", "example_folder", EXTRACT,
         "RuntimeError: example step broken after writing finished-extracts.jsonl"),
        ("pixl_study_exported", "example_folder", EXTRACT,
         "RuntimeError: example step broken after writing exported-studies.jsonl"),
    ]
    # Each hook was called once, raised, and was not called again; the study is exported once.
    assert len(_lines(received / BROKEN / "exported-studies.jsonl")) == 1
    assert len(_lines(received / BROKEN / "finished-extracts.jsonl")) == 1
    assert [s.counts for s in client.extracts() if s.project == BROKEN] == [{"exported": 1}]

    plugin = next(p for p in listing.plugins if p.name == "example_folder")
    assert plugin.module == "pixl_example_destination"
    assert plugin.destinations == ["example-folder"]
    assert {"pixl_study_exported", "pixl_extract_finished"} <= set(plugin.hooks)
    anon = get_json(HttpOrthanc(settings.anon.url, settings.orthanc_auth), "/pixl/plugins")
    assert [p["hooks"] for p in anon["plugins"] if p["name"] == "example_folder"] == [plugin.hooks]

    assert cli.main(["--url", settings.raw.url, "plugins"]) == 0
    out = capsys.readouterr().out
    assert "example_folder  hooks: " in out and "destinations: example-folder" in out
    assert (f"pixl_study_exported of example_folder: {BROKEN}/{EXTRACT} job ") in out
