"""The review report of a `pixl-deid` run: what happened to every tag, and to every file.

Written for the person who signs off a project's rules: `report.json` for
tools, `report.md` to read. It names tags, rules and reasons, never values.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.datadict import keyword_for_tag

from orthanc_plugins.anon.deid.engine import CompiledProject
from orthanc_plugins.anon.deid.tag_rules import format_tag
from orthanc_plugins.anon.deid.vocabularies import VOCABULARY_REMOVED


@dataclass(frozen=True)
class FileOutcome:
    input: str  # "#N sha256:..." (an input's path can be a patient's name)
    status: str  # kept, dropped, quarantined, skipped
    reason: str | None = None
    output: str | None = None
    validation: dict | None = None  # validation.FileValidation of a kept output


class RunReport:
    def __init__(self, project: CompiledProject) -> None:
        self.project = project
        self.files: list[FileOutcome] = []
        # What happened to each tag, per file: counted only for the files kept in the end.
        self._file_tags: list[Counter[tuple[str, str, str]]] = []
        self._pending: Counter[tuple[str, str, str]] = Counter()
        self._names: dict[int, str] = {}

    def audit(self, path: tuple[int, ...], tag: int, action: str, why: str) -> None:
        """An engine `TagAudit`: count what happened to this tag at this depth."""
        key = " > ".join(self._name(t) for t in (*path, tag))
        self._pending[(key, action, why)] += 1

    def add_file(self, outcome: FileOutcome) -> None:
        self.files.append(outcome)
        self._file_tags.append(self._pending)
        self._pending = Counter()

    def _tags(self) -> dict[str, Counter[tuple[str, str]]]:
        tags: dict[str, Counter[tuple[str, str]]] = {}
        for outcome, counts in zip(self.files, self._file_tags):
            if outcome.status != "kept":
                continue
            for (key, action, why), count in counts.items():
                tags.setdefault(key, Counter())[(action, why)] += count
        return tags

    def replace_file(self, index: int, outcome: FileOutcome) -> None:
        self.files[index] = outcome

    def _name(self, tag: int) -> str:
        name = self._names.get(tag)
        if name is None:
            keyword = "private" if tag >> 16 & 1 else keyword_for_tag(tag) or "unknown"
            name = self._names[tag] = f"{format_tag(tag)} {keyword}"
        return name

    def status_counts(self) -> Counter[str]:
        return Counter(outcome.status for outcome in self.files)

    def values_removed_by_vocabulary(self) -> int:
        return sum(count for outcomes in self._tags().values()
                   for (action, _), count in outcomes.items() if action == VOCABULARY_REMOVED)

    def as_dict(self) -> dict:
        config = self.project.config
        return {
            "project": config.slug,
            "project_file": str(config.source_path),
            "tag_files": [str(p) for p in config.base_tag_files],
            "manufacturer_override_files": [str(p) for p in config.manufacturer_override_files],
            "summary": dict(sorted(self.status_counts().items())),
            "values_removed_by_vocabulary": self.values_removed_by_vocabulary(),
            "files": [asdict(outcome) for outcome in self.files],
            "tags": [
                {"tag": tag, "outcomes": [
                    {"action": action, "why": why, "instances": count}
                    for (action, why), count in sorted(outcomes.items())
                ]}
                for tag, outcomes in sorted(self._tags().items())
            ],
            "refused_private_rules": list(self.project.refused_private_rules),
            "unresolved_private_rules": [
                f"{format_tag(rule.tag)} ({rule.source})"
                for rule in self.project.tag_rules.unresolved],
        }

    def write(self, output_dir: Path) -> tuple[Path, Path]:
        data = self.as_dict()
        json_path = Path(output_dir) / "report.json"
        json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        md_path = Path(output_dir) / "report.md"
        md_path.write_text(_markdown(data), encoding="utf-8")
        return json_path, md_path


def _markdown(data: dict) -> str:
    lines = [
        f"# De-identification report: project `{data['project']}`",
        "",
        f"Project file: `{data['project_file']}`  ",
        "Tag files: " + ", ".join(f"`{Path(p).name}`" for p in data["tag_files"]) + "  ",
        "Manufacturer overrides: "
        + (", ".join(f"`{Path(p).name}`" for p in data["manufacturer_override_files"]) or "none"),
        "",
        "## Summary",
        "",
        *(f"- {status}: {count}" for status, count in data["summary"].items()),
        f"- values removed by a vocabulary (`keep-vocabulary`): {data['values_removed_by_vocabulary']}",
        "",
        "## Files not kept",
        "",
        "| file | status | reason |",
        "|---|---|---|",
    ]
    lines += [f"| `{f['input']}` | {f['status']} | {f['reason']} |"
              for f in data["files"] if f["status"] != "kept"]
    lines += [
        "",
        "## What happened to each tag",
        "",
        "Counts are instances. Nested tags are shown as `sequence > tag`.",
        "",
        "| tag | action | why | instances |",
        "|---|---|---|---|",
    ]
    for entry in data["tags"]:
        for outcome in entry["outcomes"]:
            lines.append(f"| {entry['tag']} | {outcome['action']} | {outcome['why']} | "
                         f"{outcome['instances']} |")
    lines += ["", "## Private rules that keep nothing", ""]
    lines += [f"- refused (opaque value; `deid_options.accept_opaque_private` not set): {r}"
              for r in data["refused_private_rules"]]
    lines += [f"- unresolved (no known private creator): {r}"
              for r in data["unresolved_private_rules"]]
    if not data["refused_private_rules"] and not data["unresolved_private_rules"]:
        lines.append("none")
    lines += ["", "## Files kept, validated", "",
              ("Checks per file: every source UID changed; every UID the keyed map of a source "
               "UID (references stay consistent); dates shifted by the patient's one shift; "
               "free text removed; what was done to the pixels."), "",
              "| file | output | UIDs changed | references | dates | free text | pixels | passed |",
              "|---|---|---|---|---|---|---|---|"]
    for f in data["files"]:
        if f["status"] != "kept":
            continue
        v = f.get("validation") or {}
        lines.append(f"| `{f['input']}` | `{f['output']}` | {v.get('uids_changed')} | "
                     f"{v.get('references_consistent')} | {v.get('dates')} | "
                     f"{v.get('free_text')} | {v.get('pixels')} | {v.get('passed')} |")
    return "\n".join(lines) + "\n"
