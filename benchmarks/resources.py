"""Peak memory of a stack's servers, and py-spy profiles of them, during a benchmark.

Memory, per phase of a benchmark:
- an Orthanc or the FTPS server (one process each): the kernel's own high-water mark,
  `VmHWM` in /proc/<pid>/status, reset at the start of the phase by writing 5 to
  /proc/<pid>/clear_refs, so that no spike between two samples is missed;
- PostgreSQL (a postmaster and a backend per connection, which come and go): the
  largest sum over its processes of their proportional set size (Pss, from
  /proc/<pid>/smaps_rollup), sampled; Pss counts the shared buffers once, where a sum
  of RSS would count them once per backend.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pixl_stack.processes import pid_alive, terminate

SAMPLE_SECONDS = 0.25


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants now."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return tree


def reset_high_water_mark(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peaks (MB) of named single processes and of named process trees, over one phase.

    `single` and `trees` map a name to a function that returns the PIDs (so that a
    server restarted or added during the phase is still seen)."""

    def __init__(self, single: dict[str, Callable[[], list[int]]],
                 trees: dict[str, Callable[[], list[int]]]) -> None:
        self.single = single
        self.trees = trees
        self._peaks_kb: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        for pids in self.single.values():
            for pid in pids():
                reset_high_water_mark(pid)
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample_once()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample_once()

    def _sample_once(self) -> None:
        for name, pids in self.single.items():
            for pid in pids():  # the largest of the servers of one kind (raw, raw-b, ...)
                kb = max(_status_kb(pid, "VmHWM"), _status_kb(pid, "VmRSS"))
                self._peaks_kb[name] = max(self._peaks_kb[name], kb)
        for name, roots in self.trees.items():
            total = sum(_pss_kb(pid) for root in roots() for pid in process_tree(root))
            self._peaks_kb[name] = max(self._peaks_kb[name], total)

    def peaks_mb(self) -> dict[str, float]:
        return {name: self._peaks_kb[name] / 1024 for name in (*self.single, *self.trees)}


# --- profiles -------------------------------------------------------------------------------


@dataclass
class Profile:
    """A py-spy recording of one process, in py-spy's "raw" (collapsed stacks) format."""

    name: str
    output: Path
    process: subprocess.Popen


def start_profiles(targets: dict[str, int], folder: Path, rate: int = 50) -> list[Profile]:
    """`py-spy record` of each named PID (an Orthanc: py-spy reads its embedded Python)."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy")
    if not Path(py_spy).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    profiles = []
    for name, pid in targets.items():
        output = folder / f"{name}.txt"
        log = (folder / f"{name}.py-spy.log").open("wb")
        process = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
             "--format", "raw", "--output", str(output)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        profiles.append(Profile(name, output, process))
    return profiles


def stop_profiles(profiles: list[Profile]) -> None:
    """Stop each py-spy (SIGINT: it writes its file, then exits), by its own PID."""
    for profile in profiles:
        if profile.process.poll() is None:
            profile.process.send_signal(signal.SIGINT)
    for profile in profiles:
        try:
            profile.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            terminate(profile.process.pid, 5)
        if pid_alive(profile.process.pid):
            profile.process.kill()


_LINE_NUMBER = re.compile(r":\d+\)$")
NO_FRAME = "(no Python frame)"


def summarise_profile(collapsed: Path, top: int = 12) -> list[str]:
    """Where the samples of py-spy's collapsed stacks were, as shares: the innermost frames
    over all samples, then, for each thread entry point (the first frame below threading's
    own), the innermost function of PIXL's own code with what it was calling, as shares of
    that entry's samples.

    py-spy cannot tell an idle thread of an embedded interpreter from a busy one (it does
    not see which OS thread runs which Python thread), so it samples every Python thread
    at every tick: the shares are of wall time, waits included (a `time.sleep` shows).
    For a worker that does its steps one after the other, that is where a study's time goes.
    """
    own: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    by_entry: dict[str, Counter[str]] = {}
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        # A thread with a Python thread state that runs no Python (Orthanc's C++ side of
        # the plugin, inside or between callbacks) is sampled with no frame at all.
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")] if stack else [NO_FRAME]
        own[frames[-1]] += samples
        entry = next((frame for frame in frames if "(threading.py)" not in frame), frames[-1])
        entries[entry] += samples
        by_entry.setdefault(entry, Counter())[_pixl_call(frames)] += samples
    if not total:
        return ["  (no samples: the process ran no Python while it was recorded)"]

    def shares(counter: Counter[str], of: int, indent: str = "    ") -> list[str]:
        return [f"{indent}{100 * n / of:5.1f} %  {frame}" for frame, n in counter.most_common(top)]

    lines = [f"  {total} samples (wall time of every Python thread); innermost frames:",
             *shares(own, total)]
    for entry, samples in entries.most_common():
        if samples < total / 20 or entry == NO_FRAME:
            continue
        lines.append(f"  thread entry {entry}, {100 * samples / total:.1f} % of the samples;"
                     " of its time, PIXL function -> what it was calling:")
        lines += shares(by_entry[entry], samples, indent="      ")
    return lines


PIXL_CODE = ("(orthanc_plugins/", "(pixl_hooks/")
# Thin adapters over the Orthanc SDK and HTTP: the PIXL function that calls them is the one
# that says what the call was for.
ADAPTERS = ("orthanc_plugins/common/plugin_support.py", "orthanc_plugins/common/orthanc_api.py")


def _pixl_call(frames: list[str]) -> str:
    for depth in range(len(frames) - 1, -1, -1):
        frame = frames[depth]
        if any(code in frame for code in PIXL_CODE) and not any(a in frame for a in ADAPTERS):
            callee = frames[depth + 1] if depth + 1 < len(frames) else "(itself)"
            return f"{frame} -> {callee}"
    return frames[-1]
