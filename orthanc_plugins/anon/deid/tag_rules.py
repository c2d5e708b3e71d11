"""Tag rules: PIXL's tag-operation YAML, loaded, validated and compiled to a dict by tag.

A base file is a list of `{name, group, element, op}` entries; a manufacturer
override file is a list of `{manufacturer: REGEX, tags: [entries]}` blocks. A
project lists base files and override files; later entries win over earlier
ones, and a matching override wins over the base. The compiled rules are an
allow-list: a tag that has no rule is removed, at every depth.

Private tags are resolved as DICOM defines them (PS3.5 7.8.1): by group, private
creator and element offset, never by the slot a file happens to use. An entry
may name its creator (`creator: "Philips Imaging DD 001"`); PIXL's entries do not,
so an override block's private entries take the creator that the block's
manufacturer writes in that group and slot (`KNOWN_PRIVATE_CREATORS`). A private
entry whose creator is known neither way is kept aside as unresolved: it keeps
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR

from orthanc_plugins.anon.deid.vocabularies import (
    KEEP_VOCABULARY,
    VOCABULARY_KEYS,
    VOCABULARY_VRS,
    Vocabulary,
    vocabulary_of_entry,
)
from orthanc_plugins.common.projects import ProjectConfigError, read_yaml_file

KEEP = "keep"
DELETE = "delete"
REPLACE = "replace"
REPLACE_UID = "replace_UID"
SECURE_HASH = "secure-hash"
DATE_SHIFT = "date-shift"
OPERATIONS = (KEEP, DELETE, REPLACE, REPLACE_UID, SECURE_HASH, DATE_SHIFT, KEEP_VOCABULARY)

# VRs that hold text a keyed hash can stand in for.
HASHABLE_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
DATE_VRS = frozenset({"DA", "DT"})


# (vendor, group, slot) -> the private creator that vendor writes there; vendor is the first
# of VENDORS named by an override's manufacturer regex. From the vendors' conformance
# statements (and dcm2niix's notes that PIXL's override files cite).
VENDORS = ("philips", "siemens", "ge", "canon", "toshiba", "hitachi", "fuji")
KNOWN_PRIVATE_CREATORS = {
    ("philips", 0x2001, 0x10): "Philips Imaging DD 001",
    ("philips", 0x2001, 0x90): "Philips Imaging DD 129",
    ("philips", 0x2005, 0x10): "Philips MR Imaging DD 001",
    ("philips", 0x2005, 0x11): "Philips MR Imaging DD 002",
    ("siemens", 0x0019, 0x10): "SIEMENS MR HEADER",
    ("siemens", 0x0029, 0x10): "SIEMENS CSA HEADER",
    ("siemens", 0x0029, 0x11): "SIEMENS MEDCOM HEADER2",
    ("siemens", 0x0051, 0x10): "SIEMENS MR HEADER",
    ("ge", 0x0019, 0x10): "GEMS_ACQU_01",
    ("ge", 0x0021, 0x10): "GEMS_RELA_01",
    ("ge", 0x0025, 0x10): "GEMS_SERS_01",
    ("ge", 0x0027, 0x10): "GEMS_IMAG_01",
    ("ge", 0x0043, 0x10): "GEMS_PARM_01",
}
# Private values whose content is a vendor's binary structure (UIDs and the true scan date
# inside): kept only where the project accepts that risk (DeidOptions.accept_opaque_private).
OPAQUE_PRIVATE = {
    ("siemens csa header", 0x10): "Siemens CSA image header",
    ("siemens csa header", 0x20): "Siemens CSA series header",
    ("siemens medcom header2", 0x60): "Siemens CSA series header (MEDCOM)",
}

PrivateKey = tuple[int, str, int]  # (group, creator in lower case, element offset)


@dataclass(frozen=True)
class TagRule:
    tag: int
    op: str
    source: str  # where the rule comes from, for reports: "ct.yaml" or "mri.yaml [^philips]"
    creator: str | None = None  # private tags: the block's private creator, once resolved

    @property
    def private_key(self) -> PrivateKey | None:
        """(group, creator, offset) of a private element rule; (group, creator, 0) of a
        private creator rule; None for a public tag or an unresolved rule."""
        if not self.tag >> 16 & 1 or self.creator is None:
            return None
        element = self.tag & 0xFFFF
        offset = element & 0xFF if element >= 0x1000 else 0
        return (self.tag >> 16, self.creator.strip().lower(), offset)
    vocabulary: Vocabulary | None = None  # op keep-vocabulary only (vocabularies.py)


@dataclass(frozen=True)
class ManufacturerOverride:
    regex: re.Pattern[str]
    rules: Mapping[int, TagRule]  # public tags
    private: Mapping[PrivateKey, TagRule] = field(default_factory=dict)
    unresolved: tuple[TagRule, ...] = ()


def _split_private(rules: Mapping[int, TagRule], vendor: str | None
                   ) -> tuple[dict[int, TagRule], dict[PrivateKey, TagRule], tuple[TagRule, ...]]:
    """Public rules by tag; private rules by (group, creator, offset); unresolved ones."""
    public: dict[int, TagRule] = {}
    private: dict[PrivateKey, TagRule] = {}
    unresolved: list[TagRule] = []
    for tag, rule in rules.items():
        if not tag >> 16 & 1:
            public[tag] = rule
            continue
        element = tag & 0xFFFF
        slot = element >> 8 if element >= 0x1000 else element
        if element < 0x10 or (element > 0xFF and element < 0x1000):
            unresolved.append(rule)  # group lengths and reserved elements are never kept
            continue
        creator = rule.creator or KNOWN_PRIVATE_CREATORS.get((vendor or "", tag >> 16, slot))
        if creator is None:
            unresolved.append(rule)
            continue
        resolved = TagRule(tag, rule.op, rule.source, creator)
        key = resolved.private_key
        assert key is not None
        private[key] = resolved
    return public, private, tuple(unresolved)


def vendor_of(pattern: str) -> str | None:
    lowered = pattern.lower()
    return next((v for v in VENDORS if re.search(rf"(?<![a-z]){v}", lowered)), None)


class CompiledTagRules:
    """The project's rules: base rules plus the overrides of the instance's manufacturer."""

    def __init__(self, base: Mapping[int, TagRule], overrides: tuple[ManufacturerOverride, ...]):
        self.base, self.base_private, base_unresolved = _split_private(base, None)
        self.overrides = overrides
        self.unresolved = base_unresolved + tuple(r for o in overrides for r in o.unresolved)
        self._by_manufacturer: dict[str, dict[int, TagRule]] = {}
        self._private_by_manufacturer: dict[str, dict[PrivateKey, TagRule]] = {}

    def private_for_manufacturer(self, manufacturer: str) -> dict[PrivateKey, TagRule]:
        """The private rules for one manufacturer, by (group, creator, offset)."""
        rules = self._private_by_manufacturer.get(manufacturer)
        if rules is None:
            rules = dict(self.base_private)
            for override in self.overrides:
                if override.regex.search(manufacturer):
                    rules.update(override.private)
            self._private_by_manufacturer[manufacturer] = rules
        return rules

    def all_private(self) -> list[TagRule]:
        return [*self.base_private.values(),
                *(rule for override in self.overrides for rule in override.private.values())]

    def for_manufacturer(self, manufacturer: str) -> dict[int, TagRule]:
        """The rules for one manufacturer (memoised: a project sees few manufacturers)."""
        rules = self._by_manufacturer.get(manufacturer)
        if rules is None:
            rules = dict(self.base)
            for override in self.overrides:
                if override.regex.search(manufacturer):
                    rules.update(override.rules)
            self._by_manufacturer[manufacturer] = rules
        return rules


def compile_tag_rules(base_files: Iterable[Path], override_files: Iterable[Path]) -> CompiledTagRules:
    base: dict[int, TagRule] = {}
    for path in base_files:
        base.update(load_base_file(path))
    overrides: list[ManufacturerOverride] = []
    for path in override_files:
        overrides.extend(load_override_file(path))
    return CompiledTagRules(base, tuple(overrides))


def load_base_file(path: Path) -> dict[int, TagRule]:
    entries = _load_list(path)
    return _rules_from_entries(path, entries, "", source=path.name)


def load_override_file(path: Path) -> list[ManufacturerOverride]:
    overrides = []
    for index, block in enumerate(_load_list(path)):
        key = f"[{index}]"
        if not isinstance(block, dict) or set(block) != {"manufacturer", "tags"}:
            raise ProjectConfigError(path, key, "must be a mapping with exactly 'manufacturer' and 'tags'")
        pattern = block["manufacturer"]
        if not isinstance(pattern, str) or not pattern:
            raise ProjectConfigError(path, f"{key}.manufacturer", "must be a non-empty regex string")
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ProjectConfigError(path, f"{key}.manufacturer", f"invalid regex: {exc}") from exc
        if not isinstance(block["tags"], list):
            raise ProjectConfigError(path, f"{key}.tags", "must be a list of tag entries")
        rules = _rules_from_entries(path, block["tags"], f"{key}.tags",
                                    source=f"{path.name} [{pattern}]")
        public, private, unresolved = _split_private(rules, vendor_of(pattern))
        overrides.append(ManufacturerOverride(regex=regex, rules=public, private=private,
                                              unresolved=unresolved))
    return overrides


def _load_list(path: Path) -> list[Any]:
    document = read_yaml_file(path)
    if not isinstance(document, list):
        raise ProjectConfigError(path, "(file)", "must be a YAML list of tag entries")
    return document


def _rules_from_entries(path: Path, entries: list[Any], prefix: str, source: str) -> dict[int, TagRule]:
    rules: dict[int, TagRule] = {}
    for index, entry in enumerate(entries):
        key = f"{prefix}[{index}]"
        rule = _rule_from_entry(path, entry, key, source)
        previous = rules.get(rule.tag)
        if previous is not None and previous.op != rule.op:
            raise ProjectConfigError(
                path, key, f"tag {format_tag(rule.tag)} already has op {previous.op!r} in this file"
            )
        rules[rule.tag] = rule
    return rules


def _rule_from_entry(path: Path, entry: Any, key: str, source: str) -> TagRule:
    if not isinstance(entry, dict):
        raise ProjectConfigError(path, key, "must be a mapping with group, element and op")
    allowed_keys = ("name", "group", "element", "op", "creator", *VOCABULARY_KEYS)
    for name in entry:
        if name not in allowed_keys:
            raise ProjectConfigError(path, f"{key}.{name}", f"unknown key (allowed: {', '.join(allowed_keys)})")
    for name in ("group", "element", "op"):
        if name not in entry:
            raise ProjectConfigError(path, f"{key}.{name}", "missing required key")
    group = _tag_part(path, entry["group"], f"{key}.group")
    element = _tag_part(path, entry["element"], f"{key}.element")
    tag = (group << 16) | element
    op = entry["op"]
    if op not in OPERATIONS:
        raise ProjectConfigError(
            path, f"{key}.op", f"unknown operation {op!r} (known: {', '.join(OPERATIONS)})"
        )
    _check_op_fits_vr(path, f"{key}.op", tag, op)
    creator = entry.get("creator")
    if creator is not None and (not isinstance(creator, str) or not creator.strip()
                                or not group & 1):
        raise ProjectConfigError(path, f"{key}.creator",
                                 "must be a private creator string, on a private tag only")
    return TagRule(tag=tag, op=op, source=source, creator=creator,
                   vocabulary=vocabulary_of_entry(path, key, entry))


def _tag_part(path: Path, value: Any, key: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            raise ProjectConfigError(path, key, f"must be a hex number like 0x0010, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ProjectConfigError(path, key, f"must be a number from 0x0000 to 0xFFFF, got {value!r}")
    return value


def _check_op_fits_vr(path: Path, key: str, tag: int, op: str) -> None:
    """Operations that only make sense for some VRs are checked where the VR is known
    (public tags); private tags are checked per instance."""
    if op not in (SECURE_HASH, DATE_SHIFT, REPLACE_UID, KEEP_VOCABULARY) or tag >> 16 & 1:
        return
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return
    allowed = {SECURE_HASH: HASHABLE_VRS, DATE_SHIFT: DATE_VRS, REPLACE_UID: {"UI"},
               KEEP_VOCABULARY: VOCABULARY_VRS}[op]
    if vr not in allowed:
        raise ProjectConfigError(
            path, key, f"{op!r} does not apply to {format_tag(tag)} (VR {vr}; needs {'/'.join(sorted(allowed))})"
        )


def format_tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
