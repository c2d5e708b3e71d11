"""An extract's report written as two files, `<project>-<extract>-report.html`
(self-contained) and `.json`, by `pixl-tui report` and the overview's r key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.client import InvalidInput, RawClient


@dataclass(frozen=True)
class WrittenReport:
    html_path: Path
    json_path: Path
    report: dict[str, Any]


def write_report(client: RawClient, project: str, extract: str, folder: Path) -> WrittenReport:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    report = client.report(project, extract)
    page = client.report_html(project, extract)
    stem = folder / f"{project}-{extract}-report"
    written = WrittenReport(stem.with_suffix(".html"), stem.with_suffix(".json"), report)
    written.json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    written.html_path.write_text(page, encoding="utf-8")
    return written
