"""What the benchmarks that run a private native stack share: its ports and its settings."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from orthanc_plugins.common.settings import REPO_ROOT, Settings, load_settings
from pixl_stack.processes import port_free

# Offsets of PIXL_PORT_BASE that the stack listens on (FTPS, Orthanc HTTP and DICOM, PostgreSQL).
STACK_PORT_OFFSETS = (21, 42, 43, 44, 45, 242, 243, 244, 245, 432)


def free_port_base(extra_offsets: Iterable[int] = ()) -> int:
    """A port base whose stack ports (and `extra_offsets`) are all free now.

    Below Linux's ephemeral ports (32768 and up), and off both the default
    PIXL_PORT_BASE (28000) and the tests' ranges (10000 to 25999).
    """
    offsets = (*STACK_PORT_OFFSETS, *extra_offsets)
    for base in range(29000, 32000, 500):
        if all(port_free(base + offset) for offset in offsets):
            return base
    raise RuntimeError("no free ports for the benchmark's stack")


def private_stack_settings(state: Path, projects_dir: Path, port_base: int,
                           **environment: str) -> Settings:
    """Point this process's settings (and so every server the stack starts) at a state
    folder, projects and ports of the benchmark's own; `environment` adds variables."""
    state.chmod(0o755)  # PostgreSQL (user postgres) must traverse it
    os.environ.update({
        "PIXL_STATE_DIR": str(state), "PIXL_PORT_BASE": str(port_base),
        "PIXL_PROJECTS_DIR": str(projects_dir),
        "PIXL_TAG_RULES_DIR": str(REPO_ROOT / "tag_rules"),
        **environment,
    })
    return load_settings()
