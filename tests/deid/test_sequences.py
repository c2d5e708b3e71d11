"""Sequence items parsed by our own reader are what pydicom's reader makes of them."""

from __future__ import annotations

import warnings
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset

from orthanc_plugins.anon.deid.sequences import _parse_items, sequence_items
from orthanc_plugins.anon.deid.values import element_vr
from pixl_stack.studygen import StudySpec, generate_study, make_patient

from .helpers import third_party_files, write_bytes


def _assert_same_items(ours: Dataset, theirs: Dataset, where: str) -> int:
    """Compare two readings of one dataset, sequences parsed by us and by pydicom; returns
    how many sequences our reader parsed itself."""
    parsed_here = 0
    assert list(ours._dict) == list(theirs._dict), where
    for tag in list(theirs._dict):
        if element_vr(theirs, tag) != "SQ":
            mine, pydicoms = ours._dict[tag], theirs._dict[tag]
            if pydicoms.is_raw:
                assert (mine.VR, mine.length, mine.value, mine.is_implicit_VR, mine.is_little_endian) \
                    == (pydicoms.VR, pydicoms.length, pydicoms.value, pydicoms.is_implicit_VR,
                        pydicoms.is_little_endian), f"{where} {tag}"
            continue
        raw = ours._dict[tag]
        if raw.is_raw and raw.value and _parse_items(raw.value, raw.is_implicit_VR,
                                                     raw.is_little_endian) is not None:
            parsed_here += 1
        our_items, their_items = sequence_items(ours, tag), theirs[tag].value
        assert len(our_items) == len(their_items), f"{where} {tag}"
        assert ours[tag].is_undefined_length == theirs[tag].is_undefined_length
        for index, (mine, pydicoms) in enumerate(zip(our_items, their_items)):
            for attribute in ("is_undefined_length_sequence_item", "original_encoding",
                              "original_character_set"):
                assert getattr(mine, attribute) == getattr(pydicoms, attribute), \
                    f"{where} {tag}[{index}] {attribute}"
            parsed_here += _assert_same_items(mine, pydicoms, f"{where} {tag}[{index}]")
    return parsed_here


def test_generated_sequences_are_all_parsed_here_as_pydicom_parses_them() -> None:
    data = write_bytes(generate_study(StudySpec(series=2, instances_per_series=2), make_patient(4))[-1])
    parsed_here = _assert_same_items(pydicom.dcmread(BytesIO(data)), pydicom.dcmread(BytesIO(data)),
                                     "generated CT")
    assert parsed_here >= 6  # every sequence of a generated CT, nested ones included


def test_third_party_sequences_are_parsed_as_pydicom_parses_them() -> None:
    parsed_here = 0
    for path in third_party_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed_here += _assert_same_items(pydicom.dcmread(path, force=True),
                                              pydicom.dcmread(path, force=True), path.name)
    assert parsed_here >= 50
