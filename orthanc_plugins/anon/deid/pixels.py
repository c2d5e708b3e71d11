"""Pixel data looked at, and cleaned where that is lossless, before anything is kept.

Text can hide in Pixel Data where no viewer shows it and no tag rule reaches it:

- native data: bytes after the last pixel, and bits of each sample outside
  BitsStored/HighBit (embedded overlays live there once their 60xx elements
  are gone). Padding is zeroed; unused bits are cleared (unsigned) or made the
  sign extension of HighBit (signed), which every reader decodes to the same
  pixel values.
- JPEG, JPEG lossless, JPEG-LS: COM and APPn segments of every frame
  (EXIF, XMP, ICC, vendors' notes) are dropped, bytes after EOI too; the
  entropy-coded data is copied as it is, so nothing is re-encoded. The APP
  segments a decoder needs (a JFIF header without thumbnail, Adobe's colour
  transform flag, CharLS's colour transform) are kept.
- JPEG 2000 and HTJ2K codestreams: COM segments of the main and tile-part
  headers are dropped (tile-part lengths corrected), bytes after EOC too.

- RLE: every segment is decoded (pydicom's own RLE decoder) and must hold exactly
  the frame's bytes, with its unused bits clean; RLE is checked, not rewritten.

Where that cannot be done without re-encoding (video syntaxes; RLE data with
something after the pixels or in the unused bits; JP2 boxes;
a codestream whose samples have more bits than BitsStored, since the bits
above it cannot be cleared; 1-bit samples; data shorter than its attributes
say) `PixelCleaningError` says why, and the engine quarantines the instance.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames, parse_basic_offsets
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.rle import _rle_decode_segment, _rle_parse_header
from pydicom.tag import BaseTag
from pydicom.uid import UID

from orthanc_plugins.anon.deid.values import element_vr, first_text, text_codec

PIXEL_DATA = BaseTag(0x7FE00010)
FLOAT_PIXEL_DATA = (BaseTag(0x7FE00008), BaseTag(0x7FE00009))
EXTENDED_OFFSET_TABLE = (BaseTag(0x7FE00001), BaseTag(0x7FE00002))

JPEG_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
})
JPEG_LS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
J2K_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
})
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# Subsampled native layouts: two samples' worth of bytes per pixel.
_SUBSAMPLED = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422"})

# JPEG markers (ITU T.81 B.1.1.3, T.87 for SOF55 and LSE).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
                  0xF7})
_SOS, _EOI, _COM = 0xDA, 0xD9, 0xFE
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# APP segments a decoder needs, by (marker, exact segment, identifier): JFIF without a
# thumbnail, Adobe's transform flag, CharLS's colour transform (HP extension).
_NEEDED_APP = ((0xE0, 16, b"JFIF\x00"), (0xEE, 14, b"Adobe"), (0xE8, 7, b"mrfx"))

# JPEG 2000 codestream markers (ITU T.800 A).
_J2K_SOC, _J2K_SOT, _J2K_SOD, _J2K_EOC = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9
_J2K_SIZ, _J2K_COM, _J2K_TLM = 0xFF51, 0xFF64, 0xFF55
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


class PixelCleaningError(Exception):
    """The pixel data cannot be checked or cleaned losslessly (the reason holds no value)."""


@dataclass(frozen=True)
class PixelLayout:
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    signed: bool
    photometric: str

    @classmethod
    def of(cls, ds: Dataset) -> PixelLayout:
        try:
            bits_allocated = _number(ds, 0x00280100)
            bits_stored = _number(ds, 0x00280101, bits_allocated)
            layout = cls(
                rows=_number(ds, 0x00280010), columns=_number(ds, 0x00280011),
                frames=_number(ds, 0x00280008, 1) or 1, samples=_number(ds, 0x00280002),
                bits_allocated=bits_allocated, bits_stored=bits_stored,
                high_bit=_number(ds, 0x00280102, bits_stored - 1),
                signed=_number(ds, 0x00280103, 0) == 1,
                photometric=first_text(ds, 0x00280004, text_codec(ds)).upper(),
            )
        except (KeyError, TypeError, ValueError, struct.error):
            raise PixelCleaningError("the image pixel attributes are missing or invalid") from None
        if min(layout.rows, layout.columns, layout.frames, layout.samples) < 1 or not (
            1 <= layout.bits_stored <= layout.bits_allocated
            and layout.bits_stored - 1 <= layout.high_bit < layout.bits_allocated
        ):
            raise PixelCleaningError("the image pixel attributes are inconsistent")
        return layout

    @property
    def native_length(self) -> int:
        """Bytes of native pixel data, without the padding byte."""
        samples = 2 if self.photometric in _SUBSAMPLED else self.samples
        count = self.rows * self.columns * self.frames * samples
        return math.ceil(count / 8) if self.bits_allocated == 1 else \
            count * (self.bits_allocated // 8)


def _number(ds: Dataset, tag: int, default: int | None = None) -> int:
    """An US or IS value read from the raw element (converting costs more than the rest)."""
    elem = ds._dict.get(BaseTag(tag))
    value = None if elem is None else elem.value
    if value is None or value == b"" or value == "":
        if default is None:
            raise KeyError(tag)
        return default
    vr = elem.VR or dictionary_VR(tag)  # implicit VR: the dictionary's (US, or IS for frames)
    if isinstance(value, bytes) and vr in ("US", "SS"):
        little = elem.is_little_endian if isinstance(elem, RawDataElement) else True
        return struct.unpack(("<" if little else ">") + ("H" if vr == "US" else "h"), value[:2])[0]
    if isinstance(value, bytes):
        return int(value.decode("ascii").strip(" \x00").split("\\")[0])
    return int(value[0] if isinstance(value, list | MultiValue) else value)


def clean_pixel_data(ds: Dataset, syntax: UID, little_endian: bool) -> list[str]:
    """Clean the instance's pixel data in place; what was done (empty if nothing was needed).

    Raises PixelCleaningError where it cannot be done losslessly."""
    done: list[str] = []
    for tag in FLOAT_PIXEL_DATA:
        if tag in ds._dict:
            done += _clean_float(ds, tag)
    if PIXEL_DATA not in ds._dict:
        return done
    if ds._dict[PIXEL_DATA].value is None:
        return done
    layout = PixelLayout.of(ds)
    if syntax.is_encapsulated:
        return done + _clean_encapsulated(ds, syntax, layout)
    return done + _clean_native(ds, layout, little_endian)


# --- native ------------------------------------------------------------------------------------


def _clean_native(ds: Dataset, layout: PixelLayout, little_endian: bool) -> list[str]:
    data = ds.PixelData
    expected = layout.native_length
    if len(data) < expected:
        raise PixelCleaningError("Pixel Data is shorter than its image attributes say")
    done = []
    new = bytearray(data) if len(data) > expected and any(data[expected:]) else None
    if new is not None:
        new[expected:] = bytes(len(data) - expected)
        done.append("bytes after the last pixel zeroed")
    if layout.bits_allocated == 1:
        used = layout.rows * layout.columns * layout.frames * layout.samples
        if used % 8 and data[expected - 1] >> (used % 8):
            new = new if new is not None else bytearray(data)
            new[expected - 1] &= (1 << (used % 8)) - 1
            done.append("bits after the last pixel zeroed")
    elif layout.bits_allocated in (8, 16, 32, 64):
        samples = _cleared_unused_bits(data if new is None else bytes(new), layout, little_endian)
        if samples is not None:
            new = new if new is not None else bytearray(data)
            new[:expected] = samples
            done.append(f"bits outside BitsStored {layout.bits_stored} (HighBit "
                        f"{layout.high_bit}) cleared")
    else:
        raise PixelCleaningError(f"BitsAllocated {layout.bits_allocated} cannot be checked")
    if new is not None:
        _replace_pixel_data(ds, PIXEL_DATA, bytes(new))
    return done


def _cleared_unused_bits(data: bytes, layout: PixelLayout, little_endian: bool) -> bytes | None:
    """The samples with their unused bits cleared (or sign-extended), or None if already clean."""
    if layout.bits_stored == layout.bits_allocated:
        return None
    size = layout.bits_allocated // 8
    dtype = np.dtype(f"{'<' if little_endian else '>'}u{size}")
    count = layout.native_length // size
    low = layout.high_bit + 1 - layout.bits_stored
    used = ((1 << layout.bits_stored) - 1) << low
    samples = np.frombuffer(data, dtype=dtype, count=count)
    if low == 0 and count:
        # Clean data is the usual case, and a min/max reduction proves it without a copy:
        # unsigned values below 2**BitsStored; signed ones in range when read as signed.
        if not layout.signed and int(samples.max()) >> layout.bits_stored == 0:
            return None
        if layout.signed:
            signed = samples.view(np.dtype(dtype.str.replace("u", "i")))
            half = 1 << (layout.bits_stored - 1)
            if -half <= int(signed.min()) and int(signed.max()) < half:
                return None
    cleared = samples & np.array(used, dtype=dtype)
    if layout.signed:
        above = np.array(((1 << layout.bits_allocated) - 1) ^ ((1 << (layout.high_bit + 1)) - 1),
                         dtype=dtype)
        sign = np.array(1 << layout.high_bit, dtype=dtype)
        cleared = np.where(cleared & sign, cleared | above, cleared).astype(dtype)
    if np.array_equal(cleared, samples):
        return None
    return cleared.tobytes()


def _clean_float(ds: Dataset, tag: BaseTag) -> list[str]:
    layout_rows = ds.get("Rows")
    data = ds._dict[tag].value
    if not isinstance(data, bytes) or layout_rows is None:
        return []
    size = 4 if tag == FLOAT_PIXEL_DATA[0] else 8
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1) * \
        int(ds.get("SamplesPerPixel") or 1) * size
    if len(data) < expected:
        raise PixelCleaningError("Float Pixel Data is shorter than its image attributes say")
    if not any(data[expected:]):
        return []
    _replace_pixel_data(ds, tag, data[:expected] + bytes(len(data) - expected))
    return ["bytes after the last pixel zeroed"]


def _replace_pixel_data(ds: Dataset, tag: BaseTag, data: bytes, undefined: bool = False) -> None:
    vr = element_vr(ds, tag)
    if vr == "OB or OW":
        vr = "OW"
    ds._dict[tag] = DataElement(tag, vr, data, is_undefined_length=undefined)


# --- encapsulated ------------------------------------------------------------------------------


def _clean_encapsulated(ds: Dataset, syntax: UID, layout: PixelLayout) -> list[str]:
    clean: Callable[[bytes], tuple[bytes, int]]
    if syntax in JPEG_SYNTAXES or syntax in JPEG_LS_SYNTAXES:
        jpeg_ls = syntax in JPEG_LS_SYNTAXES
        clean = functools.partial(strip_jpeg, jpeg_ls=jpeg_ls)
    elif syntax in J2K_SYNTAXES:
        clean = strip_j2k
    elif syntax == RLE_LOSSLESS:
        def clean(frame: bytes) -> tuple[bytes, int]:
            check_rle(frame, layout)
            return frame.rstrip(b"\x00"), layout.bits_stored
    else:
        raise PixelCleaningError(f"pixel data in transfer syntax {syntax.name} cannot be "
                                 "checked without decoding it")
    data = ds.PixelData
    try:
        has_offsets = bool(parse_basic_offsets(data))
        frames = list(generate_frames(data, number_of_frames=layout.frames))
    except (ValueError, TypeError, struct.error):
        raise PixelCleaningError("the encapsulated pixel data cannot be parsed") from None
    if len(frames) != layout.frames:
        raise PixelCleaningError("the encapsulated frames do not match NumberOfFrames")
    cleaned, changed = [], False
    for frame in frames:
        new, precision = clean(frame)
        if precision > layout.bits_stored:
            raise PixelCleaningError(f"the compressed samples have {precision} bits, more than "
                                     f"BitsStored {layout.bits_stored}: the bits above cannot be "
                                     "cleared without re-encoding")
        changed = changed or new != frame.rstrip(b"\x00")
        cleaned.append(new)
    if not changed:
        return []
    _replace_pixel_data(ds, PIXEL_DATA, encapsulate(cleaned, has_bot=has_offsets), undefined=True)
    for tag in EXTENDED_OFFSET_TABLE:  # the frames' offsets have moved
        ds._dict.pop(tag, None)
    return ["metadata segments and trailing bytes removed from the compressed frames"]


def check_rle(frame: bytes, layout: PixelLayout) -> None:
    """An RLE frame holds its pixels and nothing else: each segment decodes to exactly one
    byte plane (a trailing zero byte of padding aside), and the unused bits are clean."""
    size = layout.bits_allocated // 8
    if layout.bits_allocated not in (8, 16, 32) or len(frame) < 64:
        raise PixelCleaningError("an RLE frame cannot be checked")
    try:
        offsets = _rle_parse_header(frame[:64])
    except ValueError:
        raise PixelCleaningError("an RLE frame header is invalid") from None
    if len(offsets) != layout.samples * size or sorted(offsets) != offsets:
        raise PixelCleaningError("an RLE frame's segments do not match the image attributes")
    plane = layout.rows * layout.columns
    ends = offsets[1:] + [len(frame)]
    segments = []
    for start, end in zip(offsets, ends):
        decoded = _rle_decode_segment(frame[start:end])
        if len(decoded) < plane or any(decoded[plane:]):
            raise PixelCleaningError("an RLE segment holds something other than its pixels")
        segments.append(np.frombuffer(bytes(decoded[:plane]), dtype=np.uint8))
    if layout.bits_stored == layout.bits_allocated:
        return
    for sample in range(layout.samples):  # segments: most significant byte first
        value = np.zeros(plane, dtype=f"<u{size}")
        for byte in range(size):
            value |= segments[sample * size + byte].astype(value.dtype) << (8 * (size - 1 - byte))
        one = PixelLayout(layout.rows, layout.columns, 1, 1, layout.bits_allocated,
                          layout.bits_stored, layout.high_bit, layout.signed, "MONOCHROME2")
        if _cleared_unused_bits(value.tobytes(), one, True) is not None:
            raise PixelCleaningError("an RLE frame has bits set outside BitsStored: they cannot "
                                     "be cleared without re-encoding")


def strip_jpeg(data: bytes, jpeg_ls: bool = False) -> tuple[bytes, int]:
    """A JPEG (or JPEG-LS) stream without COM, unneeded APPn segments and trailing bytes, and
    its sample precision."""
    if data[:2] != b"\xff\xd8":
        raise PixelCleaningError("a JPEG frame does not start with SOI")
    out, position, end, precision = [b"\xff\xd8"], 2, len(data), 0
    while True:
        if position >= end or data[position] != 0xFF:
            raise PixelCleaningError("a JPEG frame is malformed (no marker where one must be)")
        while position < end and data[position] == 0xFF:  # fill bytes
            position += 1
        if position >= end:
            raise PixelCleaningError("a JPEG frame ends without EOI")
        marker = data[position]
        position += 1
        if marker == _EOI:
            out.append(b"\xff\xd9")
            return b"".join(out), precision
        if marker in _STANDALONE:
            out.append(bytes((0xFF, marker)))
            continue
        if position + 2 > end:
            raise PixelCleaningError("a JPEG frame ends inside a segment")
        (length,) = struct.unpack_from(">H", data, position)
        segment = data[position:position + length]
        if length < 2 or len(segment) != length:
            raise PixelCleaningError("a JPEG segment's length runs past the frame")
        position += length
        if marker == _COM or (0xE0 <= marker <= 0xEF and not _needed_app(marker, segment)):
            continue
        if marker in _SOF:
            precision = max(precision, segment[2])
        out.append(bytes((0xFF, marker)) + segment)
        if marker == _SOS:
            scan_end = _end_of_scan(data, position, jpeg_ls)
            out.append(data[position:scan_end])
            position = scan_end


def _needed_app(marker: int, segment: bytes) -> bool:
    return any(marker == app and len(segment) == length and segment[2:].startswith(ident)
               for app, length, ident in _NEEDED_APP)


def _end_of_scan(data: bytes, position: int, jpeg_ls: bool) -> int:
    """Where the entropy-coded data after SOS ends: the next marker that is not a stuffed
    byte or a restart marker."""
    while True:
        found = data.find(b"\xff", position)
        if found < 0 or found + 1 >= len(data):
            raise PixelCleaningError("a JPEG scan ends without a marker")
        following = data[found + 1]
        stuffed = following < 0x80 if jpeg_ls else following == 0x00
        if stuffed or 0xD0 <= following <= 0xD7:
            position = found + 2
        elif following == 0xFF:
            position = found + 1
        else:
            return found


def strip_j2k(data: bytes) -> tuple[bytes, int]:
    """A JPEG 2000 codestream without COM segments and trailing bytes, and the largest
    component precision."""
    if data.startswith(_JP2_SIGNATURE):
        raise PixelCleaningError("a JPEG 2000 frame is wrapped in JP2 boxes")
    if data[:2] != b"\xff\x4f":
        raise PixelCleaningError("a JPEG 2000 frame does not start with SOC")
    out, position, precision, has_tlm = [b"\xff\x4f"], 2, 0, False
    # Main header: marker segments up to the first SOT.
    while True:
        marker, segment, position = _j2k_segment(data, position)
        if marker == _J2K_SOT:
            position -= len(segment) + 2
            break
        if marker == _J2K_SIZ:
            components = struct.unpack_from(">H", segment, 36)[0]
            precision = max((segment[38 + 3 * i] & 0x7F) + 1 for i in range(components))
        has_tlm = has_tlm or marker == _J2K_TLM
        if marker != _J2K_COM:
            out.append(struct.pack(">H", marker) + segment)
    # Tile-parts: SOT, header segments up to SOD, then data to the tile-part's end.
    while True:
        if data[position:position + 2] == b"\xff\xd9":
            out.append(b"\xff\xd9")
            return b"".join(out), precision
        start = position
        marker, sot, position = _j2k_segment(data, position)
        if marker != _J2K_SOT:
            raise PixelCleaningError("a JPEG 2000 codestream is malformed (SOT expected)")
        (tile_length,) = struct.unpack_from(">I", sot, 4)
        header: list[bytes] = []
        removed = 0
        while True:
            marker, segment, position = _j2k_segment(data, position)
            if marker == _J2K_SOD:
                break
            if marker == _J2K_COM:
                removed += len(segment) + 2
            else:
                header.append(struct.pack(">H", marker) + segment)
        if removed and has_tlm:
            raise PixelCleaningError("a JPEG 2000 tile-part comment cannot be removed (TLM)")
        tile_end = start + tile_length if tile_length else len(data.rstrip(b"\x00")) - 2
        if tile_end > len(data) or tile_end < position:
            raise PixelCleaningError("a JPEG 2000 tile-part runs past the frame")
        new_length = tile_length - removed if tile_length else 0
        out.append(b"\xff\x90" + sot[:4] + struct.pack(">I", new_length) + sot[8:])
        out.extend(header)
        out.append(b"\xff\x93" + data[position:tile_end])
        position = tile_end


def _j2k_segment(data: bytes, position: int) -> tuple[int, bytes, int]:
    """(marker, its segment without the marker, position after it); SOD has no segment."""
    if position + 2 > len(data):
        raise PixelCleaningError("a JPEG 2000 codestream ends early")
    (marker,) = struct.unpack_from(">H", data, position)
    if marker == _J2K_SOD:
        return marker, b"", position + 2
    if marker >> 8 != 0xFF or position + 4 > len(data):
        raise PixelCleaningError("a JPEG 2000 codestream is malformed")
    (length,) = struct.unpack_from(">H", data, position + 2)
    segment = data[position + 2:position + 2 + length]
    if length < 2 or len(segment) != length:
        raise PixelCleaningError("a JPEG 2000 segment's length runs past the frame")
    return marker, segment, position + 2 + length
