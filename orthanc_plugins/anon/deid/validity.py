"""Whether an instance can be de-identified at all: a DICOM instance with its identity
(the four UIDs), a transfer syntax that is one, and no element cut short. An instance that is not is quarantined with
a reason naming tags, never values: non-DICOM bytes that reached anon, a file truncated
in transit, a producer that left out its UIDs.
"""

from __future__ import annotations

import re

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Looser than PS3.5 9.1 on purpose: archives hold UIDs with leading zeros, which work.
_UID_TEXT = re.compile(r"[0-9.]{1,64}")


def unusable_reason(ds: Dataset) -> str | None:
    """Why `ds` cannot be de-identified, or None when it can. `ds` itself is left as it
    was read (its elements raw): the checks convert a copy, and only the few elements
    they need (converting every element would cost more than de-identifying it; an
    element the engine cannot convert is named by `first_unreadable` afterwards)."""
    truncated = _first_truncated(ds.copy())
    readable = ds.copy()
    missing = [keyword for keyword in REQUIRED_UIDS if not _has_value(readable, keyword)]
    if len(missing) == len(REQUIRED_UIDS):
        return "not a DICOM instance (none of " + ", ".join(REQUIRED_UIDS) + ")"
    if truncated:
        return truncated
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not _is_transfer_syntax(syntax):
        return "its TransferSyntaxUID is not a transfer syntax"
    if missing:
        return "missing " + ", ".join(missing)
    malformed = [keyword for keyword in REQUIRED_UIDS
                 if not _UID_TEXT.fullmatch(str(readable.get(keyword)).strip("\0 "))]
    if malformed:
        return "not a UID (digits and dots, at most 64): " + ", ".join(malformed)
    return None


def _has_value(ds: Dataset, keyword: str) -> bool:
    try:
        return bool(str(ds.get(keyword, "") or "").strip())
    except Exception:  # noqa: BLE001 - an element that cannot be read holds no usable value
        return False


def _first_truncated(ds: Dataset) -> str | None:
    """The first top-level element holding fewer bytes than its header declares."""
    for tag in list(ds.keys()):
        try:
            element = ds.get_item(tag)  # raw: its declared length is still known
        except Exception:  # noqa: BLE001 - unreadable, reported by _first_unreadable
            element = None
        if not isinstance(element, RawDataElement) or element.length == _UNDEFINED_LENGTH:
            continue
        held = len(element.value or b"")
        if held < element.length:
            name = keyword_for_tag(tag) or "a private element"
            return (f"truncated: ({tag.group:04X},{tag.element:04X}) {name} holds {held} of "
                    f"its {element.length} bytes")
    return None


def first_unreadable(ds: Dataset) -> str | None:
    """The first element (at any depth) that pydicom cannot convert, named by its tag.
    It converts `ds`: call it on a dataset that is no longer needed."""
    for tag in list(ds.keys()):  # the tags first: each is converted on its own below
        try:
            element = ds[tag]
            items = element.value if element.VR == "SQ" else ()
        except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, the element is bad
            return f"({tag.group:04X},{tag.element:04X}) cannot be read ({type(exc).__name__})"
        for item in items:
            problem = first_unreadable(item)
            if problem:
                return problem
    return None


def _is_transfer_syntax(uid: UID) -> bool:
    try:
        return bool(UID(uid).is_transfer_syntax)
    except ValueError:  # a private UID: no known transfer syntax
        return False
