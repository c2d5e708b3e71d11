"""The de-identified instance as DICOM file bytes, written at a fraction of dcmwrite's cost.

The engine never changes an instance's transfer syntax or character set, so
every element it keeps as it was is still the raw element pydicom read: its
value bytes are written as they were read, and only its header is packed
here. Elements the engine converted or made go through pydicom's own value
writers, one by one. Pixel data is never copied before the final join.

The bytes are those of `dcmwrite(..., enforce_file_format=True)` for the same
dataset (tests/deid/test_writer.py holds us to that): preamble, File Meta
Information with its group length, then the elements in tag order, group 0000
and retired group lengths left out, sequences and items with the lengths (or
delimiters) pydicom would write.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from typing import Any

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR

from orthanc_plugins.anon.deid.sequences import LONG_LENGTH_VRS, UNDEFINED_LENGTH
from orthanc_plugins.anon.deid.values import character_set

PIXEL_DATA = BaseTag(0x7FE00010)
SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
TRANSFER_SYNTAX_UID = BaseTag(0x00020010)
# VRs whose value is bytes written as they are (OB, and OB or OW, padded to even length).
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW"})
_PADDED_BYTES_VRS = frozenset({"OB", "OB or OW"})
_EXPLICIT_LITTLE = (False, True)


class _Encoding:
    """Header packing for one transfer syntax's byte order and VR handling."""

    def __init__(self, implicit: bool, little: bool) -> None:
        order = "<" if little else ">"
        self.implicit = implicit
        self.little = little
        self.tag_and_length = struct.Struct(order + "HHI").pack  # implicit VR, items, delimiters
        self.short_header = struct.Struct(order + "HH2sH").pack
        self.long_header = struct.Struct(order + "HH2s2xI").pack
        self.item_delimiter = self.tag_and_length(0xFFFE, 0xE00D, 0)
        self.sequence_delimiter = self.tag_and_length(0xFFFE, 0xE0DD, 0)
        self.encapsulated_item = self.tag_and_length(0xFFFE, 0xE000, 0)[:4]

    def header(self, tag: int, vr: str | None, length: int) -> bytes:
        if self.implicit:
            return self.tag_and_length(tag >> 16, tag & 0xFFFF, length)
        if vr is None or len(vr) != 2:
            raise ValueError(f"cannot write the ambiguous VR {vr!r} of {tag:08X} in an explicit "
                             "transfer syntax")
        if vr in LONG_LENGTH_VRS:
            return self.long_header(tag >> 16, tag & 0xFFFF, vr.encode(), length)
        return self.short_header(tag >> 16, tag & 0xFFFF, vr.encode(), length)


_ENCODINGS = {(implicit, little): _Encoding(implicit, little)
              for implicit in (False, True) for little in (False, True)}


def dicom_file_bytes(ds: Dataset) -> bytes:
    """`ds` with its `file_meta` as a DICOM file (Part 10), as pydicom would write it."""
    meta = ds.file_meta
    syntax = _transfer_syntax(meta)
    # As pydicom 3's dcmwrite: the transfer syntax decides, else the encoding the dataset was read in.
    if syntax is not None and not syntax.is_private:
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    else:
        read_implicit, read_little = ds.original_encoding
        if read_implicit is None or read_little is None:
            raise AttributeError("a public transfer syntax or the dataset's original encoding is "
                                 "needed to write it")
        implicit, little = read_implicit, read_little
    elements = ds._dict
    if any(tag >> 16 == 2 for tag in elements):
        raise ValueError("File Meta Information elements (0002,eeee) belong in file_meta")
    if syntax is not None and not syntax.is_private and PIXEL_DATA in elements:
        # PS3.5 A.4: encapsulated pixel data has an undefined length, native pixel data a length.
        ds[PIXEL_DATA].is_undefined_length = syntax.is_compressed

    parts = [_preamble(ds), b"DICM"]
    _append_file_meta(meta, parts)
    body: list[Any] = []
    _append_dataset(ds, _ENCODINGS[(implicit, little)], body, default_encoding, top_level=True)
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        deflated = compressor.compress(b"".join(body)) + compressor.flush()
        body = [deflated + b"\x00" if len(deflated) % 2 else deflated]
    return b"".join(parts + body)


def _transfer_syntax(meta: Dataset) -> UID | None:
    elem = meta._dict.get(TRANSFER_SYNTAX_UID)
    value = None if elem is None else elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").rstrip("\x00 ")
    return UID(value) if value else None


def _preamble(ds: Dataset) -> bytes:
    preamble = getattr(ds, "preamble", None)
    if not preamble:
        return b"\x00" * 128
    if len(preamble) != 128:
        raise ValueError("the preamble must be 128 bytes long")
    return preamble


def _append_file_meta(meta: Dataset, parts: list[Any]) -> None:
    """Explicit VR little endian, led by its group length (PS3.10 7.1)."""
    encoding = _ENCODINGS[_EXPLICIT_LITTLE]
    elements: list[Any] = []
    _append_elements(meta, encoding, elements, default_encoding, first_tag=0x00020001)
    group_length = sum(map(len, elements))
    parts.append(encoding.short_header(0x0002, 0x0000, b"UL", 4) + struct.pack("<I", group_length))
    parts.extend(elements)


def _append_dataset(ds: Dataset, encoding: _Encoding, out: list[Any], parent_charset: Any,
                    top_level: bool = False) -> None:
    # The character set of this level's converted text values, read without converting it.
    charset = character_set(ds) if SPECIFIC_CHARACTER_SET in ds._dict else parent_charset
    # Command set elements (group 0000) are not part of a file's dataset.
    _append_elements(ds, encoding, out, charset, first_tag=0x00010000 if top_level else 0)


def _append_elements(ds: Dataset, encoding: _Encoding, out: list[Any], charset: Any,
                     first_tag: int) -> None:
    elements = ds._dict
    keys = list(elements)
    tags = list(map(int, keys))
    values = list(elements.values())
    implicit, little = encoding.implicit, encoding.little
    for index in sorted(range(len(tags)), key=tags.__getitem__):  # int keys: sorted in C
        tag = tags[index]
        if tag < first_tag or (tag & 0xFFFF == 0 and tag >> 16 > 6):
            continue  # retired group lengths are not written (PS3.5 7.2)
        elem = values[index]
        if isinstance(elem, RawDataElement):
            if elem.is_implicit_VR == implicit and elem.is_little_endian == little:
                _append_raw(tag, elem, encoding, out)
                continue
            elem = ds[keys[index]]  # read in another encoding: converted, then written anew
        if elem.VR in AMBIGUOUS_VR:
            elem = correct_ambiguous_vr_element(elem, ds, little)
        if elem.VR == "SQ":
            _append_sequence(tag, elem, encoding, out, charset)
        elif elem.VR in _BYTES_VRS and isinstance(elem.value, bytes):
            _append_bytes(tag, elem, encoding, out)
        else:
            buffer = DicomBytesIO()
            buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
            write_data_element(buffer, elem, charset)
            out.append(buffer.getvalue())


def _append_raw(tag: int, elem: RawDataElement, encoding: _Encoding, out: list[Any]) -> None:
    value = elem.value or b""
    vr = elem.VR
    undefined = elem.length == UNDEFINED_LENGTH
    if undefined:
        out.append(encoding.header(tag, vr, UNDEFINED_LENGTH))
        out.append(value)
        out.append(encoding.sequence_delimiter)
        return
    if not encoding.implicit and vr not in LONG_LENGTH_VRS and len(value) > 0xFFFF:
        vr = _too_long_for_vr(tag, vr)
    out.append(encoding.header(tag, vr, len(value)))
    out.append(value)


def _append_bytes(tag: int, elem: DataElement, encoding: _Encoding, out: list[Any]) -> None:
    """OB, OW and their kind: the value as it is, never copied (pixel data is large)."""
    value: bytes = elem.value
    if len(value) % 2 and elem.VR in _PADDED_BYTES_VRS:
        value += b"\x00"
    if elem.is_undefined_length:
        if tag == PIXEL_DATA and not value.startswith(encoding.encapsulated_item):
            raise ValueError("(7FE0,0010) Pixel Data has an undefined length but is not "
                             "encapsulated")
        out.append(encoding.header(tag, elem.VR, UNDEFINED_LENGTH))
        out.append(value)
        out.append(encoding.sequence_delimiter)
        return
    out.append(encoding.header(tag, elem.VR, len(value)))
    out.append(value)


def _append_sequence(tag: int, elem: DataElement, encoding: _Encoding, out: list[Any],
                     charset: Any) -> None:
    header_at = len(out)
    out.append(b"")  # the header, once the items' length is known
    for item in elem.value or ():
        item_at = len(out)
        out.append(b"")
        _append_dataset(item, encoding, out, charset)
        if getattr(item, "is_undefined_length_sequence_item", False):
            out[item_at] = encoding.tag_and_length(0xFFFE, 0xE000, UNDEFINED_LENGTH)
            out.append(encoding.item_delimiter)
        else:
            length = sum(map(len, out[item_at + 1:]))
            out[item_at] = encoding.tag_and_length(0xFFFE, 0xE000, length)
    if elem.is_undefined_length:
        out[header_at] = encoding.header(tag, "SQ", UNDEFINED_LENGTH)
        out.append(encoding.sequence_delimiter)
    else:
        out[header_at] = encoding.header(tag, "SQ", sum(map(len, out[header_at + 1:])))


def _too_long_for_vr(tag: int, vr: str | None) -> str:
    warnings.warn(f"The value for the data element {tag:08X} exceeds the size of 64 kByte and "
                  f"cannot be written with VR {vr} in an explicit transfer syntax: written as UN")
    return "UN"

