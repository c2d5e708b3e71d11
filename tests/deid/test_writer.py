"""The engine's own writer: for every instance the engine keeps, the bytes pydicom's
dcmwrite(enforce_file_format=True) would write, in every transfer syntax at hand."""

from __future__ import annotations

import warnings
from collections import Counter
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from orthanc_plugins.anon.deid.engine import KEPT, deidentify_instance
from orthanc_plugins.anon.deid.writer import dicom_file_bytes
from pixl_stack.studygen import MODALITIES, StudySpec, generate_study, make_patient

from .helpers import KEY, third_party_files, write_bytes


@pytest.mark.parametrize(("modality", "burned_in"),
                         [(modality, False) for modality in MODALITIES] + [("US", True)])
def test_generated_instances_are_written_as_dcmwrite_writes_them(demo, modality, burned_in) -> None:
    """Burned-in ultrasound: pixels masked by the engine, written from a new value."""
    study = generate_study(StudySpec(modality=modality, seed=8, burned_in=burned_in), make_patient(8))
    kept = 0
    for ds in study:
        result = deidentify_instance(write_bytes(ds), demo, KEY)
        if result.status != KEPT:
            continue
        kept += 1
        assert ("113101" in result.option_codes) == burned_in
        assert result.data == write_bytes(result.dataset)
        assert pydicom.dcmread(BytesIO(result.data)).SOPInstanceUID == result.sop_instance_uid
    assert kept >= 1


def test_third_party_files_are_written_as_dcmwrite_writes_them(permissive) -> None:
    """Bytes in (the engine writes them) and datasets in (the writer on the engine's output,
    which also reaches the files without a modality, e.g. the character set samples)."""
    syntaxes: Counter[str] = Counter()
    for path in third_party_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = deidentify_instance(path.read_bytes(), permissive, KEY)
            if result.status == KEPT:
                assert result.data == write_bytes(result.dataset), path.name
                syntaxes[result.dataset.file_meta.TransferSyntaxUID] += 1
            source = pydicom.dcmread(path, force=True)
            if "Modality" not in source:
                source.Modality = "OT"
            if not source.get("PatientID"):
                source.PatientID = "TP-0001"  # quarantined without one: reach the writer
            result = deidentify_instance(source, permissive, KEY)
            if result.status == KEPT:
                assert dicom_file_bytes(result.dataset) == write_bytes(result.dataset), path.name
                syntaxes[result.dataset.file_meta.TransferSyntaxUID] += 1
    assert sum(syntaxes.values()) >= 100
    assert {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless} <= set(syntaxes)
