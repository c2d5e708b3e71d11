"""`pixl-tui vna find` run in a real terminal (tmux) against the real stack."""

from __future__ import annotations

import os
import shlex

import pytest
from test_terminal import PIXL_TUI, Tmux

from pixl_stack import studygen
from pixl_stack.dcmtk import storescu

pytestmark = pytest.mark.stack


@pytest.fixture
def terminal():
    tmux = Tmux(f"pixl-vna-find-test-{os.getpid()}")
    yield tmux
    tmux.run("kill-server")


def test_vna_find_prints_a_table_in_a_terminal(stack, stack_env, terminal, tmp_path):
    seed = 880000 + os.getpid() % 10_000
    patient = studygen.make_patient(seed)
    for offset, modality in ((1, "CR"), (2, "DX")):
        study = studygen.write_generated_study(
            studygen.StudySpec(modality=modality, series=1, instances_per_series=3, seed=seed + offset),
            patient, tmp_path / f"study-{offset}")
        storescu(study.files, stack.settings.vna)
    settings = " ".join(f"{name}={shlex.quote(value)}" for name, value in stack_env.items())
    command = (f"{settings} {shlex.quote(str(PIXL_TUI))} vna find --mrn {shlex.quote(patient.mrn)};"
               " echo exit=$?; sleep 600")
    terminal.run("new-session", "-d", "-s", "pixl", "-x", "120", "-y", "30", command)

    screen = terminal.wait_for("exit=0")
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("date"))
    assert lines[header].split() == ["date", "modality", "series", "instances", "in", "raw's", "cache"]
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert sorted(row[1] for row in rows) == ["CR", "DX"]
    assert all(row[2:] == ["1", "3", "no"] for row in rows)
    assert lines[header + 3] == "2 studies"
