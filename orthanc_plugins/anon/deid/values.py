"""Reading text values straight from pydicom's raw elements.

pydicom converts an element on first access, which costs far more than the
rest of de-identifying it. For the usual character sets (ASCII, Latin-1,
UTF-8) the raw bytes decode directly; any other set goes through pydicom.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR

# SpecificCharacterSet values whose text is one Python codec, without code extensions.
_SIMPLE_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def character_set(ds: Dataset) -> str | list[str]:
    """SpecificCharacterSet as pydicom converts it (one term or a list of terms; "" when
    absent), read without converting the element."""
    elem = ds._dict.get(0x00080005)
    value = None if elem is None else elem.value
    if isinstance(value, bytes):
        terms = value.decode("latin-1").rstrip("\x00 ").split("\\")
        return terms[0] if len(terms) == 1 else terms
    if isinstance(value, (list, MultiValue)):
        return [str(v) for v in value]
    return str(value or "")


def text_codec(ds: Dataset) -> str | None:
    """The codec of the dataset's text values, or None when pydicom must decode them."""
    charset = character_set(ds)
    if isinstance(charset, list):
        charset = "\\".join(charset)
    return _SIMPLE_CODECS.get(charset.strip())


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


def dataset_encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the dataset's elements: as read, else as its file meta's
    transfer syntax says (a dataset made in memory), else explicit VR little endian."""
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        return implicit, little
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_transfer_syntax and not syntax.is_private:
        return syntax.is_implicit_VR, syntax.is_little_endian
    return False, True


def first_text(ds: Dataset, tag: int, codec: str | None) -> str:
    values = text_values(ds, tag, codec)
    return values[0] if values else ""


def element_vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR of an element, without converting it where the file (explicit VR) or the
    dictionary (a public tag with one VR, in a dataset read as implicit VR) says; otherwise
    pydicom resolves it. (A dataset can hold implicit VR elements yet be written as explicit
    VR, e.g. when its transfer syntax misnamed its encoding: those must be converted.)"""
    vr = ds._dict[tag].VR
    if vr is None and not tag >> 16 & 1 and ds.original_encoding[0]:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            pass
        if vr in AMBIGUOUS_VR:
            vr = None
    if vr is None or (vr == "UN" and not tag >> 16 & 1):
        vr = ds[tag].VR  # converts the element: private creators, ambiguous or UN VRs
    return vr
