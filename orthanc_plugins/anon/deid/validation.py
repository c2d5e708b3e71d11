"""Per-file checks of a de-identified output against its source, in the spirit of the
MIDI-B challenge's validation: every instance UID changed, references kept consistent
through the keyed UID map, dates shifted (by the patient's one shift), free text
removed, and what was done to the pixels. Values are never quoted, only tags.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from orthanc_plugins.anon.deid.engine import DeidResult
from orthanc_plugins.anon.deid.pseudonyms import Pseudonymizer
from orthanc_plugins.anon.deid.tag_rules import format_tag

FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC"})
# Elements of PS3.15's profile that hold free text whatever their VR.
FREE_TEXT_KEYWORDS = ("Comments", "AdditionalPatientHistory", "ImageComments")
_RECORD_TAGS = frozenset({0x00120063})
DUMMY_DATE = "00010101"  # DeidentificationMethod: written by the engine


@dataclass(frozen=True)
class FileValidation:
    uids_changed: bool  # no source UID (other than registered ones) is left anywhere
    references_consistent: bool  # every output UID is the keyed map of a source UID
    dates: str  # "shifted", "kept", "removed", or "inconsistent" (names the tags)
    free_text: str  # "removed", or the tags of the free text kept
    pixels: str  # what the engine did to the pixel data
    problems: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def validate_output(source: Dataset, output: Dataset, result: DeidResult,
                    pseudonyms: Pseudonymizer, patient_id: str) -> FileValidation:
    problems: list[str] = []
    source_uids = {value for _, _, value in _values(source, "UI") if value not in UID_dictionary}
    output_uids = {value for _, _, value in _values(output, "UI") if value not in UID_dictionary}
    left = source_uids & output_uids
    if left:
        problems.append(f"{len(left)} source UID(s) left in the output")
    mapped = {pseudonyms.uid(uid) for uid in source_uids}
    unmapped = output_uids - mapped
    if unmapped:
        problems.append(f"{len(unmapped)} output UID(s) are not the keyed map of a source UID")

    dates = _check_dates(source, output, pseudonyms.date_shift_days(patient_id), problems)
    kept_text = sorted({format_tag(elem.tag) for elem in output.iterall()
                        if (elem.VR in FREE_TEXT_VRS or any(w in elem.keyword for w in
                                                            FREE_TEXT_KEYWORDS))
                        and elem.tag not in _RECORD_TAGS and not elem.is_empty})
    pixels = "; ".join(result.pixel_actions) or "no pixel data"
    return FileValidation(
        uids_changed=not left, references_consistent=not unmapped, dates=dates,
        free_text="removed" if not kept_text else "kept: " + ", ".join(kept_text),
        pixels=pixels, problems=tuple(problems),
    )


def _check_dates(source: Dataset, output: Dataset, shift: int, problems: list[str]) -> str:
    before = {(path, tag): value for path, tag, value in _values(source, "DA")}
    after = {(path, tag): value for path, tag, value in _values(output, "DA")}
    if not after:
        return "removed"
    wrong, kept = [], 0
    for key, value in after.items():
        old = before.get(key)
        if old is None or len(old) != 8 or len(value) != 8 or value == DUMMY_DATE:
            continue  # added, not a full date, or replaced with the PS3.15 dummy
        try:
            days = (_date(old) - _date(value)).days
        except ValueError:
            continue
        if days == 0:
            kept += 1
        elif days != shift:
            wrong.append(format_tag(key[1]))
    if wrong:
        problems.append("dates not shifted by the patient's shift: " + ", ".join(sorted(wrong)))
        return "inconsistent"
    return "kept" if kept else "shifted"


def _date(text: str) -> datetime.date:
    return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _values(ds: Dataset, vr: str, path: tuple[int, ...] = ()
            ) -> Iterator[tuple[tuple[int, ...], int, str]]:
    """(path, tag, text value) of every element of VR `vr`, at every depth."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _values(item, vr, path + (int(elem.tag),))
            continue
        if elem.VR != vr:
            continue
        value = elem.value
        values = list(value) if isinstance(value, list | tuple) or hasattr(value, "_list") \
            else [value]
        for single in values:
            text = str(single).strip().rstrip("\x00") if single is not None else ""
            if text:
                yield path, int(elem.tag), text
