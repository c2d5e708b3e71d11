"""The de-identification engine: one instance in, a kept (de-identified) instance or a
dropped/quarantined verdict out.

`deidentify_instance` runs, in order: the project's filters, ultrasound
masking, the burned-in text check, the allow-list tag rules (one walk over the
dataset, at every depth), the de-identification record (PS3.15 codes), a new
file meta, and the PHI leak guard. Rules are compiled once per project
(`compile_project`); elements that are kept unchanged stay as pydicom read
them (raw bytes), which is what makes the walk cheap.
"""

from __future__ import annotations

import functools
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from orthanc_plugins.anon.deid import filters
from orthanc_plugins.anon.deid.dates import shift_values
from orthanc_plugins.anon.deid.image_ops import (
    ImageOperations,
    MaskingError,
    apply_coordinates,
    load_image_operations,
)
from orthanc_plugins.anon.deid.leak_guard import (
    IdentifierPattern,
    find_leaks,
    source_identifiers,
)
from orthanc_plugins.anon.deid.pixels import PixelCleaningError, clean_pixel_data
from orthanc_plugins.anon.deid.pseudonyms import Pseudonymizer
from orthanc_plugins.anon.deid.sequences import sequence_items
from orthanc_plugins.anon.deid.tag_rules import (
    DATE_SHIFT,
    DATE_VRS,
    DELETE,
    HASHABLE_VRS,
    KEEP,
    OPAQUE_PRIVATE,
    REPLACE,
    SECURE_HASH,
    CompiledTagRules,
    PrivateKey,
    TagRule,
    compile_tag_rules,
    format_tag,
)
from orthanc_plugins.anon.deid.validity import first_unreadable, unusable_reason
from orthanc_plugins.anon.deid.values import dataset_encoding, element_vr, first_text, text_codec
from orthanc_plugins.anon.deid.vocabularies import (
    KEEP_VOCABULARY,
    VOCABULARY_VRS,
    apply_vocabulary,
)
from orthanc_plugins.anon.deid.writer import dicom_file_bytes
from orthanc_plugins.common.projects import ProjectConfig, load_project_by_slug

KEPT = "kept"
DROPPED = "dropped"
QUARANTINED = "quarantined"

PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
SOP_CLASS_UID = 0x00080016
SPECIFIC_CHARACTER_SET = 0x00080005

# UIDs that name a class or a transfer syntax, never an instance: kept as they are.
CLASS_UID_TAGS = frozenset(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] == "UI" and ("Class" in entry[4] or "TransferSyntax" in entry[4])
)

# PS3.15 Table CID 7050 codes, added when the option was applied to the instance.
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")
RETAIN_FULL_DATES = ("113106", "Retain Longitudinal Temporal Information Full Dates Option")
RETAIN_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
RETAIN_PATIENT_CHARACTERISTICS = ("113108", "Retain Patient Characteristics Option")
RETAIN_DEVICE_IDENTITY = ("113109", "Retain Device Identity Option")
RETAIN_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")
RETAIN_INSTITUTION_IDENTITY = ("113112", "Retain Institution Identity Option")

PATIENT_CHARACTERISTIC_TAGS = frozenset({
    0x00100040, 0x00101010, 0x00101020, 0x00101022, 0x00101030, 0x00102160,
    0x00102203, 0x001021A0, 0x001021C0,
})
DEVICE_IDENTITY_TAGS = frozenset({
    0x00081010, 0x00181000, 0x00181002, 0x00181004, 0x00181005, 0x00181007,
    0x00181008, 0x0018700A, 0x00181009,
})
INSTITUTION_TAGS = frozenset({0x00080080, 0x00080081, 0x00081040})

# PS3.15 "D": a dummy value of the element's VR.
DUMMY_VALUES: dict[str, Any] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMOUS", "DA": "00010101",
    "DS": "0", "DT": "00010101000000.000000", "IS": "0", "LO": "ANONYMOUS",
    "LT": "ANONYMOUS", "PN": "ANONYMOUS", "SH": "ANONYMOUS", "ST": "ANONYMOUS",
    "TM": "000000.00", "UC": "ANONYMOUS", "UT": "ANONYMOUS", "UR": "",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "UN": b"\x00\x00",
}
_DUMMY_TEXTS = frozenset(v.lower() for v in DUMMY_VALUES.values() if isinstance(v, str) and v)
MAX_LENGTH = {"AE": 16, "CS": 16, "LO": 64, "LT": 10240, "PN": 64, "SH": 16, "ST": 1024,
              "UC": 10240, "UT": 10240}

# An implementation class UID of our own (2.25 form, fixed), and its version name.
IMPLEMENTATION_CLASS_UID = UID("2.25.190126440127185573125463416045151405345")
IMPLEMENTATION_VERSION_NAME = "PIXL_DEID_1"

_CHARSET_RULE = TagRule(SPECIFIC_CHARACTER_SET, KEEP, "always kept: needed to read text values")
_NO_RULE = TagRule(0, DELETE, "")
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
PATIENT_AGE = 0x00101010
MAX_AGE_YEARS = 89  # older ages are written as 090Y (HIPAA: "90 or older")
# Private VRs whose content no rule or guard can read reliably.
OPAQUE_VRS = frozenset({"OB", "OW", "UN", "OD", "OF", "OL", "OV"})

# audit(path of parent sequence tags, tag, action, why): an optional observer for reports.
TagAudit = Callable[[tuple[int, ...], int, str, str], None]


@dataclass(frozen=True)
class CompiledProject:
    config: ProjectConfig
    tag_rules: CompiledTagRules
    filters: filters.CompiledFilters
    image_operations: ImageOperations
    refused_private_rules: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        return self.config.slug


def compile_project(config: ProjectConfig) -> CompiledProject:
    """Everything per-project that the engine needs, validated and compiled once.

    Rules that keep a private value of known opaque content (a Siemens CSA header, which
    holds UIDs and the true scan date-time) are refused here unless the project accepts
    that risk (`deid_options.accept_opaque_private`): they keep nothing, and
    `refused_private_rules` says which, for the report."""
    rules = compile_tag_rules(config.base_tag_files, config.manufacturer_override_files)
    refused = []
    for rule in rules.all_private():
        key = rule.private_key
        what = OPAQUE_PRIVATE.get((key[1], key[2])) if key is not None else None
        if what is not None and rule.op == KEEP:
            refused.append(f"{format_tag(rule.tag)} {what} ({rule.source})")
    return CompiledProject(
        config=config,
        tag_rules=rules,
        filters=filters.CompiledFilters.from_config(config),
        image_operations=load_image_operations(config.deid_recipe_files),
        refused_private_rules=() if config.deid_options.accept_opaque_private else tuple(refused),
    )


def load_compiled_project(slug: str, projects_dir: Path, tag_rules_dir: Path) -> CompiledProject:
    return compile_project(load_project_by_slug(slug, Path(projects_dir), Path(tag_rules_dir)))


def _files_stamp(folders: frozenset[Path]) -> frozenset[tuple[str, int, int]]:
    """Every file under `folders` with its size and modification time."""
    stamp = set()
    for folder in folders:
        for path in Path(folder).rglob("*"):
            try:
                status = path.stat()
            except FileNotFoundError:
                continue  # removed while listed: the next look sees it gone
            if stat.S_ISREG(status.st_mode):
                stamp.add((str(path), status.st_size, status.st_mtime_ns))
    return frozenset(stamp)


def _rule_folders(config: ProjectConfig) -> frozenset[Path]:
    """The folders of every file a compiled project is made of (tag-operation files'
    vocabularies lie beside them)."""
    files = (config.source_path, *config.base_tag_files, *config.manufacturer_override_files,
             *config.deid_recipe_files)
    return frozenset(Path(f).parent for f in files)


@dataclass(frozen=True)
class _CompiledEntry:
    project: CompiledProject
    folders: frozenset[Path]
    stamp: frozenset[tuple[str, int, int]]


class CompiledProjects:
    """Compiled projects by slug, compiled again as soon as any of their files, or any
    file in the projects and tag-rules folders, changes: a study is de-identified
    under the rules on disk when its turn comes, never under rules since edited."""

    def __init__(self, projects_dir: Path, tag_rules_dir: Path):
        self.projects_dir, self.tag_rules_dir = Path(projects_dir), Path(tag_rules_dir)
        self._entries: dict[str, _CompiledEntry] = {}

    def get(self, slug: str) -> CompiledProject:
        entry = self._entries.get(slug)
        if entry is not None and _files_stamp(entry.folders) == entry.stamp:
            return entry.project
        base = frozenset({self.projects_dir, self.tag_rules_dir})
        stamped = entry.folders if entry else base
        # Taken before reading, so that a change made while compiling is seen next time.
        stamp = _files_stamp(stamped)
        project = load_compiled_project(slug, self.projects_dir, self.tag_rules_dir)
        folders = base | _rule_folders(project.config)
        if folders != stamped:  # the project names files in other folders now
            stamp = _files_stamp(folders)
        self._entries[slug] = _CompiledEntry(project, folders, stamp)
        return project


@dataclass(frozen=True)
class IdPair:
    kind: str  # patient_id, study_uid, series_uid, sop_instance_uid (deid_id_map.kind)
    id_old: str
    id_new: str


@dataclass(frozen=True)
class DeidResult:
    """What became of one instance. Only `status == "kept"` carries a dataset (and bytes,
    when the input was bytes); `reason` says why anything else happened, without values."""

    status: str
    reason: str | None
    pseudo_patient_id: str
    study_uid: str  # new (pseudonymised) UIDs
    series_uid: str
    sop_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    dataset: Dataset | None = None
    data: bytes | None = None
    id_pairs: tuple[IdPair, ...] = ()
    option_codes: tuple[str, ...] = ()
    # What was done to the pixels ("checked: clean" when nothing was needed), and the kept
    # private values whose content could not be checked (the project accepted that risk).
    pixel_actions: tuple[str, ...] = ()
    opaque_private: tuple[str, ...] = ()

    @property
    def kept(self) -> bool:
        return self.status == KEPT


def deidentify_instance(
    source: Dataset | bytes,
    project: CompiledProject,
    key: bytes,
    *,
    audit: TagAudit | None = None,
) -> DeidResult:
    """De-identify one instance with the project's rules and secret key.

    `source` is a DICOM file's bytes (the result then has `data`, the new
    file's bytes) or a pydicom Dataset, which is modified in place.

    Never raises for what is in the instance: an instance that cannot be
    de-identified (not DICOM, truncated, without its UIDs, or one the engine
    fails on) is quarantined with a reason naming no value.
    """
    as_bytes = not isinstance(source, Dataset)
    try:
        ds: Dataset = source if isinstance(source, Dataset) else dcmread(BytesIO(source), force=True)
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, the file is unreadable
        return _rejected(f"not a readable DICOM file ({type(exc).__name__})")
    problem = unusable_reason(ds)
    if problem is not None:
        return _rejected(problem)
    try:
        return _deidentify_instance(ds, as_bytes, project, key, audit=audit)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not stop its study
        unreadable = first_unreadable(dcmread(BytesIO(source), force=True)) if as_bytes else None
        return _rejected(unreadable or f"de-identification failed ({type(exc).__name__})")


def _rejected(reason: str) -> DeidResult:
    """A quarantined instance that could not be read far enough to have pseudonyms."""
    return DeidResult(
        status=QUARANTINED, reason=reason, pseudo_patient_id="", study_uid="", series_uid="",
        sop_instance_uid="", modality="", series_number=None, series_description="",
    )


def _deidentify_instance(
    ds: Dataset, as_bytes: bool, project: CompiledProject, key: bytes, *, audit: TagAudit | None
) -> DeidResult:
    pseudonyms = Pseudonymizer(key, project.slug)
    facts = filters.instance_facts(ds)
    old_patient_id = first_text(ds, PATIENT_ID, text_codec(ds))
    old_uids = {tag: _top_uid(ds, tag) for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID,
                                                   SOP_INSTANCE_UID)}
    new_uids = {tag: pseudonyms.uid(uid) if uid else "" for tag, uid in old_uids.items()}

    def outcome(status: str, reason: str | None, **kept: Any) -> DeidResult:
        return DeidResult(
            status=status, reason=reason, pseudo_patient_id=pseudonyms.patient_id(old_patient_id),
            study_uid=new_uids[STUDY_INSTANCE_UID], series_uid=new_uids[SERIES_INSTANCE_UID],
            sop_instance_uid=new_uids[SOP_INSTANCE_UID], modality=facts.modality,
            series_number=facts.series_number, series_description=facts.series_description,
            **kept,
        )

    verdict = filters.select_instance(facts, project.filters)
    if verdict is not None:
        return outcome(_status_of(verdict), verdict.reason)
    if not old_patient_id:
        # Every such patient would share one pseudonym and one date shift.
        return outcome(QUARANTINED, "no PatientID: the instance cannot be linked to a "
                                    "pseudonymous patient")
    if not old_uids[SOP_INSTANCE_UID] or not _top_uid(ds, SOP_CLASS_UID):
        # PS3.10: the file meta needs both; the output would not be a valid DICOM file.
        return outcome(QUARANTINED, "no SOPInstanceUID or SOPClassUID: not a valid instance")

    syntax = UID(_output_transfer_syntax(ds))
    cleared, masked, pixel_actions = False, False, []
    decision = project.image_operations.decide(ds) if facts.has_pixels else None
    if decision is not None:
        if decision.held_back is not None:
            return outcome(_status_of(filters.Verdict(project.config.burned_in_text.action, "")),
                           f"burned-in text risk: recipe blacklist group {decision.held_back!r}")
        if decision.cleared is not None:
            cleared = True
            pixel_actions.append(f"cleared by recipe group {decision.cleared!r}")
        elif decision.coordinates:
            try:
                apply_coordinates(ds, decision.coordinates, syntax.is_encapsulated)
            except MaskingError as exc:
                return outcome(QUARANTINED, f"pixel masking failed: {exc}")
            masked = True
            pixel_actions.append("masked by recipe groups " + ", ".join(
                repr(label) for label in decision.labels))
    verdict = filters.check_burned_in_text(facts, project.config, masked, cleared)
    if verdict is not None:
        return outcome(_status_of(verdict), verdict.reason)

    rules = project.tag_rules.for_manufacturer(facts.manufacturer)
    if facts.has_pixels and any(rules.get(tag, _NO_RULE).op == KEEP for tag in PIXEL_TAGS):
        try:
            done = clean_pixel_data(ds, syntax, dataset_encoding(ds)[1])
        except PixelCleaningError as exc:
            return outcome(QUARANTINED, f"pixel data: {exc}")
        pixel_actions.extend(done or ["checked: nothing hidden"])

    # The identifiers are read before the rules remove them; the guard runs on the result.
    identifiers = IdentifierPattern(source_identifiers(ds), _DUMMY_TEXTS)
    walk = _Walk(rules, project.tag_rules.private_for_manufacturer(facts.manufacturer),
                 pseudonyms, old_patient_id, audit, dataset_encoding(ds),
                 keep_times=project.config.deid_options.times_of_day == "keep",
                 accept_opaque=project.config.deid_options.accept_opaque_private)
    apply_tag_rules(ds, walk)
    codes = add_deidentification_record(ds, walk, project.slug, masked)
    replace_file_meta(ds, new_uids[SOP_INSTANCE_UID], syntax)

    leaks = find_leaks(ds, identifiers)
    if leaks:
        return outcome(QUARANTINED, "; ".join(leak.reason for leak in leaks))

    pairs = [IdPair("patient_id", old_patient_id, pseudonyms.patient_id(old_patient_id))]
    for kind, tag in (("study_uid", STUDY_INSTANCE_UID), ("series_uid", SERIES_INSTANCE_UID),
                      ("sop_instance_uid", SOP_INSTANCE_UID)):
        if old_uids[tag]:
            pairs.append(IdPair(kind, old_uids[tag], new_uids[tag]))
    return outcome(KEPT, None, dataset=ds, data=dicom_file_bytes(ds) if as_bytes else None,
                   id_pairs=tuple(pairs), option_codes=codes, pixel_actions=tuple(pixel_actions),
                   opaque_private=tuple(walk.opaque_kept))


def _status_of(verdict: filters.Verdict) -> str:
    return QUARANTINED if verdict.action == filters.QUARANTINE else DROPPED


def _top_uid(ds: Dataset, tag: int) -> str:
    elem = ds._dict.get(tag)
    values = _text_values(elem) if elem is not None else []
    return values[0] if values else ""


# --- the walk -----------------------------------------------------------------------------------


@dataclass
class _Walk:
    rules: dict[int, TagRule]
    private_rules: dict[PrivateKey, TagRule]
    pseudonyms: Pseudonymizer
    patient_id: str
    audit: TagAudit | None
    encoding: tuple[bool, bool]  # (implicit VR, little endian) of the dataset
    keep_times: bool = False
    accept_opaque: bool = False
    dates_shifted: bool = False
    dates_kept: bool = False
    private_kept: bool = False
    opaque_kept: list[str] = field(default_factory=list)
    _shift_days: int | None = field(default=None, repr=False)

    @property
    def shift_days(self) -> int:
        if self._shift_days is None:
            self._shift_days = self.pseudonyms.date_shift_days(self.patient_id)
        return self._shift_days

    def note(self, path: tuple[int, ...], tag: int, action: str, why: str) -> None:
        if self.audit is not None:
            self.audit(path, tag, action, why)


def apply_tag_rules(ds: Dataset, walk: _Walk, path: tuple[int, ...] = ()) -> None:
    """Apply the allow-list to one dataset level and, through sequences, to all below it."""
    elements = ds._dict
    rules = walk.rules
    creators: dict[int, str] | None = None
    for tag in list(elements):
        number = int(tag)  # a BaseTag compared with the rules' int keys would run Python code
        if number >> 16 & 1:
            if creators is None:
                creators = _private_creators(ds)
            rule = _private_rule(number, creators, walk.private_rules)
        else:
            rule = rules.get(number)
            if rule is None and number == SPECIFIC_CHARACTER_SET:
                rule = _CHARSET_RULE
        if rule is not None and path and number >> 16 == 0x7FE0:
            rule = None  # pixels inside a sequence (icons) are never looked at: never kept
        if rule is None or rule.op == DELETE:
            del elements[tag]
            walk.note(path, tag, "removed", "not in the allow-list" if rule is None
                      else f"delete ({rule.source})")
            continue
        vr = element_vr(ds, tag)
        elem = elements[tag]
        if number >> 16 & 1 and number & 0xFFFF >= 0x1000:
            if vr in OPAQUE_VRS or (rule.private_key is not None and (
                    rule.private_key[1], rule.private_key[2]) in OPAQUE_PRIVATE):
                if not walk.accept_opaque:
                    del elements[tag]
                    walk.note(path, tag, "removed", f"opaque private value (VR {vr}): the "
                              f"project does not accept that risk ({rule.source})")
                    continue
                walk.opaque_kept.append(" > ".join(format_tag(t) for t in (*path, number)))
            walk.private_kept = True
        if vr == "SQ":
            _apply_to_sequence(ds, tag, rule, walk, path)
        elif vr == "UI":
            _remap_uids(ds, tag, elem, rule, walk, path)
        elif vr == "AS":
            _cap_age(ds, tag, vr, rule, walk, path)
        elif not walk.keep_times and vr in ("TM", "DT") and rule.op in (KEEP, DATE_SHIFT):
            _drop_time_of_day(ds, tag, vr, rule, walk, path)
        elif rule.op == KEEP:
            if vr in DATE_VRS:
                walk.dates_kept = True
            walk.note(path, tag, "kept", f"keep ({rule.source})")
        else:
            _transform(ds, tag, vr, rule, walk, path)


def _private_creators(ds: Dataset) -> dict[int, str]:
    """(group << 8 | slot) -> the private creator of that block at this level, lower case."""
    creators = {}
    for tag, elem in ds._dict.items():
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            value = elem.value
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
            creators[(tag >> 16) << 8 | (tag & 0xFF)] = text.strip(" \x00").lower()
    return creators


def _private_rule(tag: int, creators: dict[int, str],
                  private_rules: dict[PrivateKey, TagRule]) -> TagRule | None:
    """The rule of a private element by (group, creator, offset) (PS3.5 7.8.1); a private
    creator is kept when some rule of its block is."""
    group, element = tag >> 16, tag & 0xFFFF
    if element < 0x10 or 0xFF < element < 0x1000:
        return None
    slot = element if element <= 0xFF else element >> 8
    creator = creators.get(group << 8 | slot)
    if not creator:
        return None
    if element <= 0xFF:
        rule = private_rules.get((group, creator, 0))
        if rule is not None:
            return rule
        if any(key[0] == group and key[1] == creator for key in private_rules):
            return TagRule(tag, KEEP, "private creator of a kept block", creator)
        return None
    return private_rules.get((group, creator, element & 0xFF))


def _apply_to_sequence(ds: Dataset, tag: BaseTag, rule: TagRule, walk: _Walk, path: tuple[int, ...]) -> None:
    if rule.op == REPLACE:
        ds._dict[tag] = DataElement(tag, "SQ", Sequence([]))
        walk.note(path, tag, "emptied", f"replace ({rule.source})")
        return
    if rule.op != KEEP:
        del ds._dict[tag]
        walk.note(path, tag, "removed", f"{rule.op} does not apply to a sequence ({rule.source})")
        return
    # A kept sequence never shields its items: the same allow-list applies inside.
    walk.note(path, tag, "kept", f"keep, items filtered by the same rules ({rule.source})")
    for item in sequence_items(ds, tag):
        apply_tag_rules(item, walk, path + (tag,))


def _remap_uids(ds: Dataset, tag: BaseTag, elem, rule: TagRule, walk: _Walk, path: tuple[int, ...]) -> None:
    """Every UID except class UIDs and transfer syntaxes is replaced, whatever the op says:
    a kept instance UID would link the output back to the hospital's records."""
    values = _text_values(elem)
    if tag in CLASS_UID_TAGS and all(not value or value in UID_dictionary for value in values):
        walk.note(path, tag, "kept", f"class UID ({rule.source})")
        return
    new = [value if not value or value in UID_dictionary else walk.pseudonyms.uid(value)
           for value in values]
    if new == values:
        walk.note(path, tag, "kept", f"registered UID ({rule.source})")
        return
    ds._dict[tag] = _encoded(tag, "UI", new, walk.encoding)
    walk.note(path, tag, "UID remapped", f"{rule.op}: keyed per-project UID ({rule.source})")


def _cap_age(ds: Dataset, tag: BaseTag, vr: str, rule: TagRule, walk: _Walk,
             path: tuple[int, ...]) -> None:
    """Ages over 89 years identify few people: written as 090Y (kept or not, per the rule)."""
    if rule.op != KEEP:
        _transform(ds, tag, vr, rule, walk, path)
        return
    values = _text_values(ds._dict[tag])
    capped = [_capped_age(value) for value in values]
    if capped == values:
        walk.note(path, tag, "kept", f"keep ({rule.source})")
        return
    ds._dict[tag] = _encoded(tag, vr, capped, walk.encoding)
    walk.note(path, tag, "age capped", f"keep, over {MAX_AGE_YEARS} years written as 090Y "
                                       f"({rule.source})")


def _capped_age(value: str) -> str:
    per_year = {"Y": 1, "M": 12, "W": 52, "D": 365}
    if len(value) == 4 and value[:3].isdigit() and value[3] in per_year:
        if int(value[:3]) / per_year[value[3]] > MAX_AGE_YEARS:
            return f"{MAX_AGE_YEARS + 1:03d}Y"
        return value
    return "" if value else value  # not an age string: nothing to keep


def _drop_time_of_day(ds: Dataset, tag: BaseTag, vr: str, rule: TagRule, walk: _Walk,
                      path: tuple[int, ...]) -> None:
    """Times of day are removed unless the project keeps them (deid_options.times_of_day):
    a TM value becomes empty, a DT value keeps its (shifted) date only."""
    if vr == "TM":
        ds._dict[tag] = _encoded(tag, vr, [], walk.encoding)
        walk.note(path, tag, "emptied", f"time of day removed ({rule.source})")
        return
    dates = [value[:8] for value in _text_values(ds._dict[tag])]
    if rule.op == DATE_SHIFT:
        shifted = shift_values(dates, "DT", walk.shift_days)
        if shifted is None:
            del ds._dict[tag]
            walk.note(path, tag, "removed", f"date-shift: not a valid date ({rule.source})")
            return
        walk.dates_shifted, dates = True, shifted
    else:
        walk.dates_kept = True
    ds._dict[tag] = _encoded(tag, vr, dates, walk.encoding)
    walk.note(path, tag, "date shifted, time removed" if rule.op == DATE_SHIFT
              else "kept, time removed", f"{rule.op} ({rule.source})")


def _transform(ds: Dataset, tag: BaseTag, vr: str, rule: TagRule, walk: _Walk, path: tuple[int, ...]) -> None:
    op = rule.op
    new_value: Any = None
    if op == REPLACE and tag == PATIENT_ID:
        # A keyed pseudonym rather than a constant, so one patient's studies stay linked.
        new_value, action = [walk.pseudonyms.patient_id(walk.patient_id)], "pseudonymised"
    elif op == SECURE_HASH and vr in HASHABLE_VRS:
        values = [str(v) for v in _converted_values(ds, tag)]
        if tag == PATIENT_ID and not path:
            hashed = [walk.pseudonyms.patient_id(walk.patient_id)]
        else:
            hashed = [walk.pseudonyms.text(v, MAX_LENGTH[vr]) for v in values]
        if vr in ("CS", "AE"):
            hashed = [v.upper() for v in hashed]
        new_value, action = hashed, "pseudonymised"
    elif op == DATE_SHIFT and vr in DATE_VRS:
        shifted = shift_values(_text_values(ds._dict[tag]), vr, walk.shift_days)
        if shifted is None:
            del ds._dict[tag]
            walk.note(path, tag, "removed", f"date-shift: not a valid date ({rule.source})")
            return
        walk.dates_shifted = True
        new_value, action = shifted, "date shifted"
    elif op == KEEP_VOCABULARY and vr in VOCABULARY_VRS and rule.vocabulary is not None:
        apply_vocabulary(ds, tag, rule.vocabulary, rule.source,
                         lambda action, why: walk.note(path, tag, action, why))
        return
    elif op == REPLACE and vr in DUMMY_VALUES:
        dummy = DUMMY_VALUES[vr]
        new_value = [dummy] if isinstance(dummy, str) else dummy
        action = "replaced with a dummy value"
    else:
        del ds._dict[tag]
        walk.note(path, tag, "removed", f"{op} does not apply to VR {vr} ({rule.source})")
        return
    if isinstance(new_value, list):
        ds._dict[tag] = _encoded(tag, vr, new_value, walk.encoding)
    else:
        ds._dict[tag] = DataElement(tag, vr, new_value)
    walk.note(path, tag, action, f"{op} ({rule.source})")


def _encoded(tag: int, vr: str, values: list[str],
             encoding: tuple[bool, bool] = (False, True)) -> RawDataElement:
    """A ready-to-write element for ASCII text values (the same bytes in any transfer
    syntax): written as it is, without the cost of building and validating a DataElement."""
    data = "\\".join(values).encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    implicit, little = encoding
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, little)


def _text_values(elem) -> list[str]:
    """The string values of a text element, raw or converted, without decoding costs."""
    value = elem.value
    if value is None:
        return []
    if isinstance(value, bytes):
        text = value.decode("latin-1").rstrip("\x00 ")
        return [part.strip() for part in text.split("\\")] if text else []
    if isinstance(value, (list, MultiValue)):
        return [str(v).strip() for v in value]
    text = str(value).strip()
    return [text] if text else []


def _converted_values(ds: Dataset, tag: int) -> list[Any]:
    value = ds[tag].value  # converted with the dataset's character set
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


# --- the de-identification record and file meta -------------------------------------------------


def add_deidentification_record(ds: Dataset, walk: _Walk, slug: str, masked: bool) -> tuple[str, ...]:
    """PatientIdentityRemoved, DeidentificationMethod(+CodeSequence) and
    LongitudinalTemporalInformationModified, naming the options actually applied."""
    elements = ds._dict
    options = [BASIC_PROFILE]
    if masked:
        options.append(CLEAN_PIXEL_DATA)
    if walk.dates_kept:
        options.append(RETAIN_FULL_DATES)
    if walk.dates_shifted:
        options.append(RETAIN_MODIFIED_DATES)
    if not PATIENT_CHARACTERISTIC_TAGS.isdisjoint(elements):
        options.append(RETAIN_PATIENT_CHARACTERISTICS)
    if not DEVICE_IDENTITY_TAGS.isdisjoint(elements):
        options.append(RETAIN_DEVICE_IDENTITY)
    if walk.private_kept:
        options.append(RETAIN_SAFE_PRIVATE)
    if not INSTITUTION_TAGS.isdisjoint(elements):
        options.append(RETAIN_INSTITUTION_IDENTITY)

    code_values = tuple(value for value, _ in options)
    code_sequence = _code_sequence(tuple(options), *walk.encoding)
    temporal = "MODIFIED" if walk.dates_shifted else "UNMODIFIED" if walk.dates_kept else "REMOVED"
    added = {  # project slugs are ASCII (slugify)
        0x00120062: _encoded(0x00120062, "CS", ["YES"], walk.encoding),
        0x00120063: _encoded(0x00120063, "LO", [f"PIXL project {slug}"[:64]], walk.encoding),
        0x00120064: code_sequence,
        0x00280303: _encoded(0x00280303, "CS", [temporal], walk.encoding),
    }
    for tag, elem in added.items():
        elements[BaseTag(tag)] = elem
        walk.note((), tag, "added", "de-identification record (PS3.15)")
    return code_values


@functools.lru_cache(maxsize=64)
def _code_sequence(options: tuple[tuple[str, str], ...], implicit: bool, little: bool):
    """DeidentificationMethodCodeSequence, encoded once per set of options and encoding
    (it is the same in most instances of a project)."""
    if not little:
        return DataElement(0x00120064, "SQ", Sequence([_code_item(v, m) for v, m in options]))
    items = b"".join(_encoded_item(value, meaning, implicit) for value, meaning in options)
    return RawDataElement(BaseTag(0x00120064), "SQ", len(items), items, 0, implicit, True)


def _code_item(value: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = meaning
    return code


def _encoded_item(value: str, meaning: str, implicit: bool) -> bytes:
    """One little-endian sequence item of CodeValue, CodingSchemeDesignator, CodeMeaning."""
    body = b"".join(
        _encoded_text(tag, vr, text, implicit)
        for tag, vr, text in ((0x00080100, "SH", value), (0x00080102, "SH", "DCM"),
                              (0x00080104, "LO", meaning))
    )
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def _encoded_text(tag: int, vr: str, text: str, implicit: bool) -> bytes:
    data = text.encode("ascii")
    if len(data) % 2:
        data += b" "
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(data)) + data
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(data)) + data


def replace_file_meta(ds: Dataset, new_sop_instance_uid: str, syntax: str | None = None) -> None:
    """A new file meta: nothing of the source's (its AE titles, private info) is carried over.

    Its elements are encoded here (explicit VR little endian, as PS3.10 wants), which
    spares pydicom's validation of each one."""
    syntax = syntax or _output_transfer_syntax(ds)
    sop_class = _top_uid(ds, SOP_CLASS_UID)
    elements = (
        _meta_element(0x00020001, "OB", b"\x00\x01"),
        _encoded(0x00020002, "UI", [sop_class]),
        _encoded(0x00020003, "UI", [new_sop_instance_uid]),
        _encoded(0x00020010, "UI", [syntax]),
        _encoded(0x00020012, "UI", [IMPLEMENTATION_CLASS_UID]),
        _encoded(0x00020013, "SH", [IMPLEMENTATION_VERSION_NAME]),
    )
    ds.file_meta = FileMetaDataset({elem.tag: elem for elem in elements})
    ds.preamble = b"\x00" * 128  # a preamble can carry data (e.g. a TIFF header)


def _output_transfer_syntax(ds: Dataset) -> str:
    """The source's transfer syntax (the dataset is written in it); implicit VR little and
    explicit VR big endian are named by the dataset's encoding, as pydicom does."""
    implicit, little = dataset_encoding(ds)
    if implicit and little:
        return ImplicitVRLittleEndian
    if not implicit and not little:
        return ExplicitVRBigEndian
    old = getattr(ds, "file_meta", None)
    syntax = old.get("TransferSyntaxUID") if old is not None else None
    return str(syntax) if syntax else ExplicitVRLittleEndian


def _meta_element(tag: int, vr: str, value: bytes) -> RawDataElement:
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)
