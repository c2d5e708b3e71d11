"""Sequence items, parsed from a raw sequence element at a fraction of pydicom's cost.

pydicom parses a sequence through its general file reader, which costs some
50 microseconds for a one-item sequence; a CT instance has half a dozen. The
usual sequence (items of defined length holding elements of defined length,
in the dataset's own VR encoding) is parsed here straight from the bytes into
the same structure pydicom builds: items whose elements are raw, nested
sequences left raw until they are asked for. Anything else (undefined lengths,
items that switch VR encoding, unknown VRs) goes to pydicom.
"""

from __future__ import annotations

import struct
from typing import cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

ITEM = 0xFFFEE000
UNDEFINED_LENGTH = 0xFFFFFFFF
SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
ElementType = DataElement | RawDataElement
_KNOWN_VRS = frozenset(vr.value for vr in VR if len(vr.value) == 2)
# VRs with a 4-byte length in explicit VR encoding (PS3.5 7.1.2).
LONG_LENGTH_VRS = frozenset(vr.value for vr in EXPLICIT_VR_LENGTH_32)
_STRUCTS = {
    little: (struct.Struct(order + "HHI").unpack_from, struct.Struct(order + "HH2sH").unpack_from,
             struct.Struct(order + "I").unpack_from)
    for little, order in ((True, "<"), (False, ">"))
}


def sequence_items(ds: Dataset, tag: BaseTag) -> Sequence:
    """The items of the sequence element `tag` of `ds`, which then holds them parsed."""
    elem = ds._dict[tag]
    if isinstance(elem, RawDataElement) and elem.VR in ("SQ", None) and elem.value is not None:
        parsed = _parse_items(elem.value, elem.is_implicit_VR, elem.is_little_endian)
        if parsed is not None:
            encoding = ds.original_character_set or ds._character_set  # as pydicom converts elements
            encoding = [encoding] if isinstance(encoding, str) else encoding or [default_encoding]
            items = Sequence([_item(elements, elem, encoding) for elements in parsed])
            ds[tag] = DataElement(elem.tag, "SQ", items, elem.value_tell, False, already_converted=True)
            return items
    return ds[tag].value


def _item(elements: dict[BaseTag, ElementType], sequence: RawDataElement, encoding) -> Dataset:
    item = Dataset(elements)
    charset = elements.get(SPECIFIC_CHARACTER_SET)
    if isinstance(charset, RawDataElement):  # the item's own character set
        encoding = convert_encodings(convert_raw_data_element(charset).value)
    item.is_undefined_length_sequence_item = False
    item.set_original_encoding(sequence.is_implicit_VR, sequence.is_little_endian, encoding)
    return item


def _parse_items(data: bytes, implicit: bool, little: bool) -> list[dict[BaseTag, ElementType]] | None:
    tag_and_length, _, _ = _STRUCTS[little]
    items = []
    position, end = 0, len(data)
    while position < end:
        if position + 8 > end:
            return None
        group, element, length = tag_and_length(data, position)
        start = position + 8
        if (group << 16 | element) != ITEM or length == UNDEFINED_LENGTH or start + length > end:
            return None
        elements = _parse_elements(data, start, start + length, implicit, little)
        if elements is None:
            return None
        items.append(elements)
        position = start + length
    return items


def _parse_elements(data: bytes, position: int, end: int, implicit: bool,
                    little: bool) -> dict[BaseTag, ElementType] | None:
    tag_and_length, explicit_header, long_length = _STRUCTS[little]
    elements: dict[BaseTag, ElementType] = {}
    while position < end:
        if position + 8 > end:
            return None
        if implicit:
            group, element, length = tag_and_length(data, position)
            vr = None
            position += 8
        else:
            group, element, vr_bytes, length = explicit_header(data, position)
            vr = vr_bytes.decode("latin-1")
            if vr not in _KNOWN_VRS:
                return None  # e.g. an implicit VR item inside an explicit VR dataset
            if vr in LONG_LENGTH_VRS:
                if position + 12 > end:
                    return None
                (length,) = long_length(data, position + 8)
                position += 12
            else:
                position += 8
        if length == UNDEFINED_LENGTH or position + length > end:
            return None
        tag = BaseTag(group << 16 | element)
        value = data[position:position + length] if length \
            else cast(bytes | None, empty_value_for_VR(vr, raw=True))
        elements[tag] = RawDataElement(tag, vr, length, value, position, implicit, little)
        position += length
    return elements
