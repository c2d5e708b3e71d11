"""Reading text values straight from pydicom's raw elements.

pydicom converts an element on first access, which costs far more than the
rest of de-identifying it. For the usual character sets (ASCII, Latin-1,
UTF-8) the raw bytes decode directly; any other set goes through pydicom.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# SpecificCharacterSet values whose text is one Python codec, without code extensions.
_SIMPLE_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def text_codec(ds: Dataset) -> str | None:
    """The codec of the dataset's text values, or None when pydicom must decode them."""
    elem = ds._dict.get(0x00080005)
    if elem is None:
        return "latin-1"
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1").strip("\x00 ")
    elif isinstance(value, (list, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return _SIMPLE_CODECS.get(str(value or "").strip())


def text_values(ds: Dataset, tag: int, codec: str | None) -> list[str]:
    """The non-empty string values of a text element (none if absent)."""
    elem = ds._dict.get(tag)
    if elem is None:
        return []
    value = elem.value
    if isinstance(value, bytes) and codec is not None:
        text = value.decode(codec, "replace").rstrip("\x00 ")
        return [part.strip() for part in text.split("\\") if part.strip()]
    if elem.is_raw:
        value = ds[tag].value
    if value is None:
        return []
    values = value if isinstance(value, (list, MultiValue)) else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def first_text(ds: Dataset, tag: int, codec: str | None) -> str:
    values = text_values(ds, tag, codec)
    return values[0] if values else ""
