"""A clone in a closed folder (mode 0700, as root's home or a `mktemp -d` folder) starts
its stack: PostgreSQL, which runs as 'postgres', keeps its cluster where it can reach it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack.postgres import OWNER_NOTE, pg_root

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(os.geteuid() != 0, reason="only a root stack runs PostgreSQL as another user"),
]

# Settings of this session's own stack, which the clone must not inherit.
SESSION_SETTINGS = ("PIXL_", "ORTHANC_", "VNA_", "DICOMWEB_", "FTPS_")


def test_a_clone_in_a_closed_folder_starts_its_stack_with_its_defaults():
    closed = Path(tempfile.mkdtemp(prefix="pixl-closed-"))
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700
    clone = closed / "pixl"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(SESSION_SETTINGS)}
    env["PIXL_PORT_BASE"] = str(int(os.environ["PIXL_PORT_BASE"]) + 1000)  # window 1
    env["PYTHONPATH"] = str(clone)  # the clone's code, with this virtualenv's packages

    def pixl_stack(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pixl_stack.cli", command], cwd=clone, check=False,
                              env=env, capture_output=True, text=True, timeout=300)

    link = clone / ".state" / "pg"
    try:
        up = pixl_stack("up")
        assert up.returncode == 0, up.stderr
        states = {line.split()[0]: line.split()[1] for line in up.stdout.splitlines()}
        assert set(states.values()) == {"running"} and "postgres" in states, up.stdout

        # The cluster lives in a folder of its own, reachable by postgres and by no one else.
        assert link.is_symlink()
        cluster = link.resolve()
        assert cluster.parent == pg_root()
        assert cluster.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert stat.S_IMODE(cluster.stat().st_mode) == 0o700
        assert (cluster / OWNER_NOTE).read_text().strip() == str(clone / ".state")
        # What started is the clone's own code, with its own default state dir.
        raw_config = json.loads((clone / ".state" / "config" / "raw.json").read_text())
        assert raw_config["PythonScript"].startswith(f"{clone}/")

        status = pixl_stack("status")  # the same cluster is found again
        assert status.returncode == 0 and "postgres   running" in status.stdout, status.stdout
    finally:
        down = pixl_stack("down")
        target = link.resolve() if link.is_symlink() else None
        if target is not None and target.parent == pg_root():
            shutil.rmtree(target)
        shutil.rmtree(closed)
    assert down.returncode == 0, down.stderr
