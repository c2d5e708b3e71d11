"""PHI leak guard: after de-identification, look for the source's identifiers anywhere.

The identifiers of the source instance (patient names, IDs, birth date,
address, telephone numbers, institution, staff names) are collected before
the rules run. The output is then scanned at every depth, private elements
included, in every element that can carry text (numeric binary VRs and pixel
data excepted). A hit names the kind of identifier and the tag path, never
the value, so the reason can be logged and stored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom._uid_dict import UID_dictionary
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from orthanc_plugins.anon.deid.sequences import sequence_items
from orthanc_plugins.anon.deid.tag_rules import format_tag
from orthanc_plugins.anon.deid.values import character_set, element_vr, text_codec, text_values

# Person names: every family/given/middle component is an identifier.
NAME_TAGS = {
    0x00100010: "PatientName",
    0x00101001: "OtherPatientNames",
    0x00101005: "PatientBirthName",
    0x00101060: "PatientMotherBirthName",
    0x00080090: "ReferringPhysicianName",
    0x00081048: "PhysiciansOfRecord",
    0x00081050: "PerformingPhysicianName",
    0x00081060: "NameOfPhysiciansReadingStudy",
    0x00081070: "OperatorsName",
    0x00321032: "RequestingPhysician",
}
# Whole values (each value of a multi-valued element) are identifiers.
VALUE_TAGS = {
    0x00100020: "PatientID",
    0x00101000: "OtherPatientIDs",
    0x00101090: "MedicalRecordLocator",
    0x00080050: "AccessionNumber",
    0x00080080: "InstitutionName",
    0x00080081: "InstitutionAddress",
    0x00101040: "PatientAddress",
    0x00102154: "PatientTelephoneNumbers",
    0x00100030: "PatientBirthDate",
}
OTHER_PATIENT_IDS_SEQUENCE = BaseTag(0x00101002)
PATIENT_ID = 0x00100020

# Values that are binary numbers or pixels: no text can hide in them.
_SKIP_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "OF", "OD", "OL", "OV", "SV", "UV", "AT"})
_PIXEL_GROUP = 0x7FE0
_METHOD_CODES = 0x00120064  # written by the engine from PS3.15 constants only
_MIN_LENGTH = 3  # shorter values ("US", "1") match everywhere and identify nobody
_REGISTERED_UIDS = frozenset(UID_dictionary) | frozenset(uid.encode() for uid in UID_dictionary)
_NOT_ALNUM_BEFORE = rb"(?<![0-9A-Za-z])"
_NOT_ALNUM_AFTER = rb"(?![0-9A-Za-z])"


@dataclass(frozen=True)
class Leak:
    kind: str  # which identifier, e.g. "PatientName"
    path: str  # where it was found, e.g. "(0008,1030) StudyDescription"

    @property
    def reason(self) -> str:
        return f"identifying value ({self.kind}) found in {self.path}"


class IdentifierPattern:
    """The source's identifiers as one case-insensitive regex over bytes."""

    def __init__(
        self, identifiers: dict[str, str], encodings: list[str], ignore: frozenset[str] = frozenset()
    ) -> None:
        """`ignore`: values the de-identification itself writes (dummies such as ANONYMOUS),
        which a source may already hold and which identify nobody."""
        kept = tuple(sorted((value, kind) for value, kind in identifiers.items()
                            if value.lower() not in ignore))
        self._regex, self._kinds = _compile(kept, tuple(encodings))

    def search(self, data: bytes) -> str | None:
        """The kind of the first identifier in `data`, or None."""
        if self._regex is None:
            return None
        match = self._regex.search(data)
        return None if match is None else self._kinds.get(match.group().lower(), "identifier")


@functools.lru_cache(maxsize=256)
def _compile(
    identifiers: tuple[tuple[str, str], ...], encodings: tuple[str, ...]
) -> tuple[re.Pattern[bytes] | None, dict[bytes, str]]:
    """The regex of one set of identifiers; memoised, as a study's instances share them."""
    forms: dict[bytes, str] = {}
    for value, kind in identifiers:
        for encoded in _encoded_forms(value, list(encodings)):
            forms.setdefault(encoded.lower(), kind)
    if not forms:
        return None, forms
    alternatives = b"|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    pattern = _NOT_ALNUM_BEFORE + b"(?:" + alternatives + b")" + _NOT_ALNUM_AFTER
    return re.compile(pattern, re.IGNORECASE), forms


def _encoded_forms(value: str, encodings: list[str]) -> set[bytes]:
    forms = {value.encode("utf-8")}
    try:
        forms.add(encode_string(value, encodings))
    except (UnicodeError, LookupError, ValueError):
        pass
    return forms


def source_identifiers(ds: Dataset) -> dict[str, str]:
    """identifier value -> kind (tag keyword), from the source instance's top level."""
    codec = text_codec(ds)
    found: dict[str, str] = {}

    def add(value: str, kind: str) -> None:
        value = value.strip()
        if len(value) >= _MIN_LENGTH:
            found.setdefault(value, kind)

    for tag, kind in NAME_TAGS.items():
        for name in text_values(ds, tag, codec):
            add(name.rstrip("^"), kind)
            for group in name.split("="):
                # family, given, middle; prefixes and suffixes (Mr, Dr, Jr) identify nobody
                for part in group.split("^")[:3]:
                    add(part, kind)
    for tag, kind in VALUE_TAGS.items():
        for value in text_values(ds, tag, codec):
            add(value, kind)
            for variant in _variants(tag, value):
                add(variant, kind)
    if OTHER_PATIENT_IDS_SEQUENCE in ds._dict:
        for item in sequence_items(ds, OTHER_PATIENT_IDS_SEQUENCE):
            for value in text_values(item, PATIENT_ID, codec):
                add(value, "OtherPatientIDsSequence")
    return found


def _variants(tag: int, value: str) -> list[str]:
    """Other spellings of a value that free text is likely to use."""
    if tag == 0x00100030 and len(value) == 8 and value.isdigit():  # 19700131 -> 1970-01-31
        return [f"{value[:4]}-{value[4:6]}-{value[6:]}", f"{value[6:]}/{value[4:6]}/{value[:4]}"]
    if tag == 0x00102154:  # telephone: also the bare digits
        return ["".join(ch for ch in value if ch.isdigit())]
    if tag in (0x00101040, 0x00080081):  # address: its comma parts and its postcode-like tokens
        parts = [part for part in value.split(",") if len(part.strip()) >= 4]
        tokens = [t for t in value.replace(",", " ").split()
                  if any(c.isdigit() for c in t) and any(c.isalpha() for c in t)]
        return parts + tokens
    return []


def find_leaks(ds: Dataset, pattern: IdentifierPattern) -> list[Leak]:
    """Every element of `ds` (file meta and all depths) holding one of the identifiers."""
    chunks = list(_scannable(ds, ""))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        chunks.extend(_scannable(meta, ""))
    # One search over everything first: a clean instance costs a single regex pass.
    if pattern.search(b"\x00".join(data for _, _, data in chunks)) is None:
        return []
    leaks = []
    for prefix, tag, data in chunks:
        kind = pattern.search(data)
        if kind is not None:
            leaks.append(Leak(kind=kind, path=f"{prefix}{_describe(tag)}"))
    return leaks


def _scannable(ds: Dataset, prefix: str) -> Iterator[tuple[str, int, bytes]]:
    for tag in list(ds._dict):
        if tag >> 16 == _PIXEL_GROUP or int(tag) == _METHOD_CODES:  # int: BaseTag.__eq__ is slow
            continue
        vr = element_vr(ds, tag)
        if vr in _SKIP_VRS:
            continue
        if vr == "SQ":
            for index, item in enumerate(sequence_items(ds, tag)):
                yield from _scannable(item, f"{prefix}{_describe(tag)}[{index}] > ")
            continue
        data = _as_bytes(ds._dict[tag], vr)
        if data:
            yield prefix, tag, data


def _as_bytes(elem, vr: str) -> bytes:
    value = elem.value
    if vr == "UI":
        uid = value.rstrip(b"\0 ") if isinstance(value, bytes) else str(value or "").rstrip("\0 ")
        if uid in _REGISTERED_UIDS:
            return b""  # a registered (class, syntax) UID is public knowledge
    if elem.is_raw:
        return value or b""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value).encode("utf-8", "replace")
    return str(value).encode("utf-8", "replace")


def _describe(tag: int) -> str:
    keyword = keyword_for_tag(tag) if not tag >> 16 & 1 else "private"
    return f"{format_tag(tag)} {keyword or 'unknown'}"


def dataset_encodings(ds: Dataset) -> list[str]:
    charset = character_set(ds) or "ISO_IR 6"
    try:
        return convert_encodings(charset)
    except (LookupError, ValueError):
        return ["iso8859"]
