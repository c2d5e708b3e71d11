"""dcmtk as a PACS client: what the tests and the demo use to fill the VNA."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from orthanc_plugins.common.settings import OrthancNode


def storescu(files: Sequence[Path], node: OrthancNode, calling_aet: str = "PIXLDEMO") -> None:
    """C-STORE `files` into `node` with dcmtk's storescu."""
    if not files:
        return
    env = dict(os.environ, TCP_NODELAY="1")
    result = subprocess.run(
        ["storescu", "-aet", calling_aet, "-aec", node.aet, "-q",
         node.host, str(node.dicom_port), *map(str, files)],
        capture_output=True, text=True, env=env, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"storescu into {node.name} failed: {result.stderr.strip()[-500:]}")
