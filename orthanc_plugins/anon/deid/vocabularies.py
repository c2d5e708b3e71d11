"""Value vocabularies: tag operation `keep-vocabulary`, which keeps a text value only when
it is one of the values the project allows, and removes it otherwise.

Free-text descriptions (StudyDescription, SeriesDescription, BodyPartExamined...)
are useful to researchers and sometimes hold a name or a note typed by hand;
a vocabulary keeps the expected values and nothing else. In a tag-operation file:

    - name: "Study Description"
      group: 0x0008
      element: 0x1030
      op: "keep-vocabulary"
      vocabulary: "descriptions.yaml"   # a file beside this tag-operation file
      match: "case-insensitive"         # or "exact" (the default)

A vocabulary file is a YAML list of the allowed values (strings). Values are
compared without DICOM's padding spaces; a value kept is kept exactly as it
was. For a multi-valued element each value is judged on its own; when none is
left, the element is removed. Each value removed is reported to the audit (the
`pixl-deid` report counts them) as `VOCABULARY_REMOVED`, never with the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from orthanc_plugins.common.projects import ProjectConfigError, read_yaml_file

KEEP_VOCABULARY = "keep-vocabulary"
EXACT = "exact"
CASE_INSENSITIVE = "case-insensitive"
MATCH_MODES = (EXACT, CASE_INSENSITIVE)
# The keys an entry with op keep-vocabulary has besides name, group, element and op.
VOCABULARY_KEYS = ("vocabulary", "match")
# Text VRs whose values a vocabulary can judge.
VOCABULARY_VRS = frozenset({"CS", "LO", "SH", "ST", "LT", "UC", "UT"})
# The audit's action for each value a vocabulary removed.
VOCABULARY_REMOVED = "removed: not in the vocabulary"

# note(action, why): the engine's audit of the element at hand.
Note = Callable[[str, str], None]


@dataclass(frozen=True)
class Vocabulary:
    source: str  # the vocabulary file's name, for reports
    match: str
    allowed: frozenset[str]  # casefolded when match is case-insensitive

    def allows(self, value: str) -> bool:
        value = value.strip()
        return (value.casefold() if self.match == CASE_INSENSITIVE else value) in self.allowed


def vocabulary_of_entry(rules_path: Path, key: str, entry: dict[str, Any]) -> Vocabulary | None:
    """The vocabulary an entry of a tag-operation file names (None for other operations);
    a bad entry or file is one `ProjectConfigError` naming the file and the key."""
    extra = [name for name in VOCABULARY_KEYS if name in entry]
    if entry.get("op") != KEEP_VOCABULARY:
        if extra:
            raise ProjectConfigError(rules_path, f"{key}.{extra[0]}",
                                     f"only for op {KEEP_VOCABULARY!r}")
        return None
    name = entry.get("vocabulary")
    if not isinstance(name, str) or not name.strip():
        raise ProjectConfigError(rules_path, f"{key}.vocabulary",
                                 f"op {KEEP_VOCABULARY!r} needs the name of a vocabulary file")
    if Path(name).name != name or name in (".", ".."):
        raise ProjectConfigError(rules_path, f"{key}.vocabulary",
                                 f"must be a file name beside {rules_path.name}, got {name!r}")
    match = entry.get("match", EXACT)
    if match not in MATCH_MODES:
        raise ProjectConfigError(rules_path, f"{key}.match",
                                 f"must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    path = rules_path.parent / name
    if not path.is_file():
        raise ProjectConfigError(rules_path, f"{key}.vocabulary",
                                 f"vocabulary file {name!r} not found in {rules_path.parent}")
    return load_vocabulary(path, match)


def load_vocabulary(path: Path, match: str) -> Vocabulary:
    document = read_yaml_file(path)
    if not isinstance(document, list) or not document:
        raise ProjectConfigError(path, "(file)", "must be a non-empty YAML list of allowed values")
    values = []
    for index, value in enumerate(document):
        if not isinstance(value, str) or not value.strip():
            raise ProjectConfigError(path, f"[{index}]", "must be a non-empty string")
        values.append(value.strip().casefold() if match == CASE_INSENSITIVE else value.strip())
    return Vocabulary(source=path.name, match=match, allowed=frozenset(values))


def apply_vocabulary(ds: Dataset, tag: int, vocabulary: Vocabulary, rule_source: str,
                     note: Note) -> None:
    """Keep the element's values the vocabulary allows; remove the element if none is left."""
    why = f"{KEEP_VOCABULARY} {vocabulary.source} ({rule_source})"
    element = ds[tag]  # converted with the dataset's character set
    value = element.value
    values = [str(v) for v in value] if isinstance(value, (list, MultiValue)) else (
        [str(value)] if value not in (None, "") else [])
    kept = [v for v in values if vocabulary.allows(v)]
    for _ in range(len(values) - len(kept)):
        note(VOCABULARY_REMOVED, why)
    if not kept:
        del ds[tag]
        if not values:
            note("removed", f"empty ({why})")
        return
    if len(kept) < len(values):
        element.value = kept if len(kept) > 1 else kept[0]
    note("kept", f"in the vocabulary: {why}")
