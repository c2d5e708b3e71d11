"""The `orthanc` type stubs are found by mypy, are themselves valid, and catch misuse."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUB = REPO / "stubs" / "orthanc" / "__init__.pyi"

# How PIXL's plugin entry modules use the SDK; must type-check cleanly.
GOOD_USAGE = """
import json
from typing import Any

import orthanc


def on_rest(output: orthanc.RestOutput, uri: str, **request: Any) -> None:
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    system: bytes = orthanc.RestApiGet("/system")
    config = json.loads(orthanc.GetConfiguration())
    output.SetHttpHeader("Cache-Control", "no-store")
    if not config:
        body = "no configuration"
        output.SendHttpStatus(503, body, len(body.encode()))
        return
    output.AnswerBuffer(system, "application/json")


def on_change(change_type: int, level: int, resource_id: str) -> None:
    if change_type == orthanc.ChangeType.STABLE_STUDY and level == orthanc.ResourceType.STUDY:
        orthanc.RestApiPost(f"/studies/{resource_id}/anonymize", b"{}")
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        orthanc.LogWarning("stopping")


def on_received(dicom: bytes, origin: int) -> tuple[int, bytes | None]:
    if origin == orthanc.InstanceOrigin.REST_API:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None
    if not dicom:
        return orthanc.ReceivedInstanceAction.DISCARD, None
    return orthanc.ReceivedInstanceAction.MODIFY, dicom


def cstore_filter(instance: orthanc.DicomInstance) -> int:
    return 1 if instance.GetInstanceRemoteAet() == "VNA" else 0


orthanc.RegisterRestCallback("/pixl/(.*)", on_rest)
orthanc.RegisterOnChangeCallback(on_change)
orthanc.RegisterReceivedInstanceCallback(on_received)
orthanc.RegisterIncomingCStoreInstanceFilter(cstore_filter)


def http_filter(uri: str, **request: Any) -> bool:
    return uri.startswith("/app/") or "authorization" in request.get("headers", {})


orthanc.RegisterIncomingHttpRequestFilter(http_filter)
try:
    orthanc.RestApiDelete("/studies/unknown")
except orthanc.OrthancException as exc:
    orthanc.LogError(f"delete failed: {exc.args[0]}")
"""

# Each line must be reported by mypy: proof that the stubs, not `Any`, are in use.
BAD_USAGE = """
import orthanc

text: str = orthanc.RestApiGet("/system")  # BAD: returns bytes


def on_rest(output: orthanc.RestOutput, uri: str) -> None:
    output.SendHttpStatus(500, b"oops")  # BAD: plugin 4.0 wants (int, str, int)


def on_change(change_type: str, level: int, resource_id: str) -> None:
    pass


orthanc.RegisterOnChangeCallback(on_change)  # BAD: change_type is an int
orthanc.RestApiGett("/system")  # BAD: no such function
orthanc.LogInfo(42)  # BAD: message is a str
"""


def _run_mypy(tmp_path: Path, *paths: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--no-error-summary",
            "--show-error-codes",
            *map(str, paths),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "error: " in result.stdout or result.returncode == 0, result.stderr
    return result.stdout


def test_stubs_check_good_usage_and_reject_misuse(tmp_path: Path) -> None:
    good = tmp_path / "good_usage.py"
    good.write_text(GOOD_USAGE)
    bad = tmp_path / "bad_usage.py"
    bad.write_text(BAD_USAGE)

    output = _run_mypy(tmp_path, STUB, good, bad)

    errors_by_file: dict[str, set[int]] = {}
    for match in re.finditer(r"^(.*?):(\d+): error:", output, re.MULTILINE):
        errors_by_file.setdefault(Path(match[1]).name, set()).add(int(match[2]))
    assert "__init__.pyi" not in errors_by_file, output
    assert "good_usage.py" not in errors_by_file, output
    expected = {n for n, line in enumerate(BAD_USAGE.splitlines(), 1) if "# BAD" in line}
    assert errors_by_file.get("bad_usage.py") == expected, output
