"""PHI leak guard: after de-identification, look for the source's identifiers anywhere.

The identifiers of the source instance (patient names, IDs, birth date, address,
telephone numbers, institution, staff names, and the study's own UIDs and dates)
are collected before the rules run. The output is then scanned at every depth,
private elements and the file meta included, pixel data excepted:

- text is decoded with the character set in force at its level (ISO 2022
  escapes, GB18030, an item's own SpecificCharacterSet), then normalised:
  Unicode compatibility forms (NFKC), case folding, and every run of separators
  and punctuation made one space ("spaced") or removed ("squashed");
- binary numeric values are read as Latin-1 too: text written with a numeric VR
  is still text;
- names are matched as words of the spaced text (any length: WU^LI too), and
  joined (given and family names run together, hyphenated and apostrophe-less
  forms) in the squashed text; CJK names as they are, since CJK text has no
  spaces;
- identifiers (IDs, accession numbers, telephone numbers) are matched in the
  squashed text, so "943 476 5919" and "ABC1234567X" are found; dates in the
  usual spellings (ISO, UK, US, DICOM, with month names) between non-digits;
  source UIDs as they are.

A hit names the kind of identifier and the tag path, never the value.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes
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
ID_TAGS = {
    0x00100020: "PatientID",
    0x00101000: "OtherPatientIDs",
    0x00101090: "MedicalRecordLocator",
    0x00080050: "AccessionNumber",
    0x00102154: "PatientTelephoneNumbers",
}
PLACE_TAGS = {
    0x00080080: "InstitutionName",
    0x00080081: "InstitutionAddress",
    0x00101040: "PatientAddress",
}
BIRTH_DATE = 0x00100030
# The study's own dates: one true date in free text gives away the patient's date shift.
STUDY_DATE_TAGS = {0x00080020: "StudyDate", 0x00080021: "SeriesDate",
                   0x00080022: "AcquisitionDate", 0x00080023: "ContentDate"}
SOURCE_UID_TAGS = {0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
                   0x00080018: "SOPInstanceUID", 0x00200052: "FrameOfReferenceUID"}
OTHER_PATIENT_IDS_SEQUENCE = BaseTag(0x00101002)
PATIENT_ID = 0x00100020
MANUFACTURER = 0x00080070

_PIXEL_GROUP = 0x7FE0
_METHOD_CODES = 0x00120064  # written by the engine from PS3.15 constants only
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_TEXT_DELIMITERS = {0x5C}
# Text VRs decoded in their character set (others are ASCII by definition, or binary).
_DECODED_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UN", "OB"})
# Character sets without code extensions, decoded directly (pydicom for the others).
_SIMPLE_CODECS = {("iso8859",): "latin-1", ("latin_1",): "latin-1", ("UTF8",): "utf-8"}
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_SEPARATORS = re.compile(r"[\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")

# How a form is matched: as a word of the spaced text, inside the squashed text, or as
# a number (no digit either side) inside the squashed text.
WORD, INSIDE, NUMBER, UID = "word", "inside", "number", "uid"
# Shorter forms are matched as words only: inside text they would match the engine's own
# hex pseudonyms and ordinary words by chance.
MIN_INSIDE = 6


@dataclass(frozen=True)
class Leak:
    kind: str  # which identifier, e.g. "PatientName"
    path: str  # where it was found, e.g. "(0008,1030) StudyDescription"

    @property
    def reason(self) -> str:
        return f"identifying value ({self.kind}) found in {self.path}"


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def spaced(text: str) -> str:
    return " " + _SEPARATORS.sub(" ", normalise(text)).strip() + " "


def squashed(text: str) -> str:
    return _SEPARATORS.sub("", normalise(text))


class IdentifierPattern:
    """The source's identifiers, grouped by how they are matched. Matching is plain substring
    and set work in C (str.find, set intersection): a regex alternation of some fifty
    identifiers costs ten times more per instance."""

    def __init__(self, identifiers: dict[tuple[str, str], str], ignore: frozenset[str] = frozenset()
                 ) -> None:
        """`identifiers`: (form, how) -> kind. `ignore`: values the de-identification itself
        writes (dummies such as ANONYMOUS), which a source may hold and identify nobody."""
        ignored = frozenset(squashed(value) for value in ignore)
        self._uids = tuple((form, kind) for (form, how), kind in identifiers.items()
                           if how == UID)
        self._forms = _grouped(tuple(sorted((form, how, kind) for (form, how), kind
                                            in identifiers.items() if how != UID)), ignored)

    def search(self, texts: list[str], raws: list[str], date_value: bool = False) -> str | None:
        """The kind of the first identifier in these values (decoded, and raw as they are),
        or None. `date_value`: date/time elements, where the study's own dates belong."""
        words, phrases, inside, numbers = self._forms
        # Normalised once for all values; "\n" between values keeps them apart.
        parts = normalise("\n".join(texts)).split("\n")
        wide = " " + " ".join(_SEPARATORS.sub(" ", part) for part in parts) + " "
        narrow = "|".join(_SEPARATORS.sub("", part) for part in parts)
        raw = "\n".join(raws)
        hits = [words[word] for word in words.keys() & set(wide.split())]
        hits += [kind for form, kind in phrases if form in wide]
        hits += [kind for form, kind in inside if form in narrow]
        hits += [kind for form, kind in numbers if _bounded(narrow, form, "0123456789")]
        hits += [kind for form, kind in self._uids if _bounded(raw, form, "0123456789.")]
        for kind in hits:
            if not (date_value and kind in _STUDY_DATE_KINDS):
                return kind
        return None


_STUDY_DATE_KINDS = frozenset(STUDY_DATE_TAGS.values())


def _bounded(text: str, form: str, neighbours: str) -> bool:
    """Whether `form` occurs in `text` with no character of `neighbours` either side."""
    start = text.find(form)
    while start >= 0:
        end = start + len(form)
        if (start == 0 or text[start - 1] not in neighbours) and \
                (end == len(text) or text[end] not in neighbours):
            return True
        start = text.find(form, start + 1)
    return False


@functools.lru_cache(maxsize=256)
def _grouped(identifiers: tuple[tuple[str, str, str], ...], ignored: frozenset[str]):
    """Single words (a dict), phrases (space-delimited), inside and number forms; memoised,
    as a study's instances share them."""
    words: dict[str, str] = {}
    phrases, inside, numbers = [], [], []
    for form, how, kind in identifiers:
        if form in ignored or form.replace(" ", "") in ignored:
            continue
        if how == WORD and " " not in form:
            words.setdefault(form, kind)
        elif how == WORD:
            phrases.append((f" {form} ", kind))
        elif how == NUMBER:
            numbers.append((form, kind))
        else:
            inside.append((form, kind))
    return words, tuple(phrases), tuple(inside), tuple(numbers)


def source_identifiers(ds: Dataset) -> dict[tuple[str, str], str]:
    """(normalised form, how it is matched) -> kind (tag keyword), from the source's top level."""
    codec = text_codec(ds)
    values = tuple((tag, tuple(text_values(ds, tag, codec)))
                   for tag in (*NAME_TAGS, *ID_TAGS, *PLACE_TAGS, BIRTH_DATE, *STUDY_DATE_TAGS,
                               MANUFACTURER))
    other_ids: tuple[str, ...] = ()
    if OTHER_PATIENT_IDS_SEQUENCE in ds._dict:
        other_ids = tuple(value for item in sequence_items(ds, OTHER_PATIENT_IDS_SEQUENCE)
                          for value in text_values(item, PATIENT_ID, codec))
    found = dict(_derived(values, other_ids))  # memoised: a study's instances share them
    for tag, kind in SOURCE_UID_TAGS.items():
        for value in text_values(ds, tag, codec):
            uid = value.rstrip("\x00 ")
            if len(uid) >= 8:
                found.setdefault((uid, UID), kind)
    return found


@functools.lru_cache(maxsize=256)
def _derived(values: tuple[tuple[int, tuple[str, ...]], ...], other_ids: tuple[str, ...]
             ) -> tuple[tuple[tuple[str, str], str], ...]:
    by_tag = dict(values)
    found: dict[tuple[str, str], str] = {}
    manufacturer_words = set(spaced(" ".join(by_tag[MANUFACTURER])).split())

    def add(form: str, how: str, kind: str) -> None:
        if form.strip():
            found.setdefault((form.strip(), how), kind)

    for tag, kind in NAME_TAGS.items():
        for name in by_tag[tag]:
            for group in name.split("="):  # alphabetic, ideographic, phonetic
                _add_name(group, kind, add)
    for tag, kind in ID_TAGS.items():
        for value in by_tag[tag]:
            _add_identifier(value, kind, add)
    for value in other_ids:
        _add_identifier(value, "OtherPatientIDsSequence", add)
    for tag, kind in PLACE_TAGS.items():
        for value in by_tag[tag]:
            _add_place(value, kind, add, manufacturer_words)
    for value in by_tag[BIRTH_DATE]:
        _add_date(value, "PatientBirthDate", add)
    for tag, kind in STUDY_DATE_TAGS.items():
        for value in by_tag[tag]:
            _add_date(value, kind, add)
    return tuple(found.items())


def _add_name(name: str, kind: str, add) -> None:
    components = [c for c in name.split("^")[:3] if c.strip()]  # family, given, middle
    for component in components:
        if _CJK.search(component):
            form = squashed(component)
            add(form, INSIDE if len(form) >= 2 else WORD, kind)
            continue
        parts = spaced(component).split()
        for part in parts:
            if len(part) >= 2:  # an initial identifies nobody and is in every text
                add(part, WORD, kind)
        if len(parts) > 1:  # O'Brien -> obrien, Smith-Jones -> smithjones
            add("".join(parts), WORD, kind)
    latin = [spaced(c).split() for c in components if not _CJK.search(c)]
    latin = [parts for parts in latin if parts]
    if len(latin) == 1 and len(latin[0]) >= 2:  # "John Smith" in one component
        latin = [latin[0][:1], latin[0][-1:]]
    if len(latin) >= 2:  # given and family names run together, in either order
        family, given = "".join(latin[0]), "".join(latin[1])
        for joined in (family + given, given + family):
            add(joined, INSIDE if len(joined) >= MIN_INSIDE else WORD, kind)


def _add_identifier(value: str, kind: str, add) -> None:
    form = squashed(value)
    if len(form) < 3:  # "1", "A": such IDs match everywhere and identify nobody
        return
    if form.isdigit():
        add(form, NUMBER, kind)
    elif len(form) >= MIN_INSIDE:
        add(form, INSIDE, kind)
    else:  # short: inside longer text it would match hashes and words by chance
        add(spaced(value).strip(), WORD, kind)
    digits = "".join(ch for ch in form if ch.isdigit())
    if len(digits) >= 6 and digits != form:  # an ID's number without its letters
        add(digits, NUMBER, kind)


def _add_place(value: str, kind: str, add, manufacturer_words: set[str]) -> None:
    words = spaced(value).split()
    if not words or set(words) <= manufacturer_words:
        return  # "SIEMENS" as an institution name says no more than the Manufacturer kept
    if len("".join(words)) >= 4:
        add(" ".join(words), WORD, kind)
    if kind != "InstitutionName":
        for part in value.split(","):  # address parts, postcode-like tokens
            part_words = spaced(part).split()
            if len("".join(part_words)) >= 4:
                add(" ".join(part_words), WORD, kind)
        for token in value.replace(",", " ").split():
            if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
                add(spaced(token).strip(), WORD, kind)


def _add_date(value: str, kind: str, add) -> None:
    text = value.strip()[:8]
    if len(text) != 8 or not text.isdigit():
        return
    year, month, day = text[:4], text[4:6], text[6:]
    if not 1 <= int(month) <= 12:
        return
    name = _MONTHS[int(month) - 1]
    short_day = str(int(day))
    for form in (year + month + day, day + month + year, month + day + year):
        add(form, NUMBER, kind)
    for form in (day + name + year, day + name[:3] + year, name + day + year,
                 name[:3] + day + year, short_day + name + year, short_day + name[:3] + year,
                 name + short_day + year, name[:3] + short_day + year):
        add(form, INSIDE, kind)


def find_leaks(ds: Dataset, pattern: IdentifierPattern) -> list[Leak]:
    """Every element of `ds` (file meta and all depths) holding one of the identifiers."""
    meta = getattr(ds, "file_meta", None)
    values = list(_scannable(ds, "", dataset_encodings(ds)))
    if meta is not None:
        values.extend(_scannable(meta, "", ["iso8859"]))
    # One search over everything first: a clean instance costs a single pass.
    if pattern.search([v[3] for v in values if v[2] not in _DATE_VRS],
                      [v[4] for v in values if v[2] not in _DATE_VRS]) is None and \
            pattern.search([v[3] for v in values if v[2] in _DATE_VRS],
                           [v[4] for v in values if v[2] in _DATE_VRS], True) is None:
        return []
    leaks = []
    for prefix, tag, vr, text, raw in values:
        kind = pattern.search([text], [raw], vr in _DATE_VRS)
        if kind is not None:
            leaks.append(Leak(kind=kind, path=f"{prefix}{_describe(tag)}"))
    return leaks


def _scannable(ds: Dataset, prefix: str, encodings: list[str]
               ) -> Iterator[tuple[str, int, str, str, str]]:
    """(path prefix, tag, VR, decoded text, raw text) of every value at every depth."""
    if 0x00080005 in ds._dict and prefix:
        encodings = dataset_encodings(ds)  # an item's own character set
    codec = _SIMPLE_CODECS.get(tuple(encodings))
    for tag in list(ds._dict):
        if tag >> 16 == _PIXEL_GROUP or int(tag) == _METHOD_CODES:  # int: BaseTag.__eq__ is slow
            continue
        vr = element_vr(ds, tag)
        if vr == "SQ":
            for index, item in enumerate(sequence_items(ds, tag)):
                yield from _scannable(item, f"{prefix}{_describe(tag)}[{index}] > ", encodings)
            continue
        elem = ds._dict[tag]
        value = elem.value
        if value is None or value == b"" or value == "":
            continue
        if isinstance(value, bytes):
            raw = value.decode("latin-1")
            if vr == "UI":  # the engine's UIDs: only a source UID, raw, can be found there
                yield prefix, tag, vr, "", raw
                continue
            if vr in _DECODED_VRS or tag >> 16 & 1:
                try:
                    text = value.decode(codec) if codec else \
                        decode_bytes(value, encodings, _TEXT_DELIMITERS)
                except (UnicodeError, LookupError, ValueError):
                    text = raw
                yield prefix, tag, vr, text, raw
                if text != raw:
                    yield prefix, tag, vr, raw, raw
                continue
            yield prefix, tag, vr, raw, raw
            continue
        if isinstance(value, (list, MultiValue)):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        yield prefix, tag, vr, text, text


def _describe(tag: int) -> str:
    keyword = keyword_for_tag(tag) if not tag >> 16 & 1 else "private"
    return f"{format_tag(tag)} {keyword or 'unknown'}"


def dataset_encodings(ds: Dataset) -> list[str]:
    charset = character_set(ds) or "ISO_IR 6"
    try:
        return convert_encodings(charset)
    except (LookupError, ValueError):
        return ["iso8859"]
