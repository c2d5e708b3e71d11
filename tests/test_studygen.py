"""The study generator writes valid, re-readable, deterministic, identifiable studies."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pixl_stack.studygen import (
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    GeneratedStudy,
    StudySpec,
    generate_cohort,
    generate_study,
    identifying_values,
    make_patient,
    staff_and_site,
    write_study,
)

ALL_MODALITIES = ("CT", "MR", "CR", "DX", "US")


def _text_values(ds: Dataset) -> list[str]:
    """Every string value in the dataset, nested sequences and private tags included."""
    found: list[str] = []
    for element in ds.iterall():
        if element.VR in ("SQ", "OB", "OW", "UN"):
            continue
        values = element.value if element.VM > 1 else [element.value]
        found.extend(str(value) for value in values)
    return found


def _digest(paths: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.name.encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


@pytest.mark.parametrize("modality", ALL_MODALITIES)
def test_written_files_are_valid_part10_and_reread(modality: str, tmp_path: Path) -> None:
    spec = StudySpec(modality=modality, series=2, instances_per_series=3, secondary_capture=True)
    datasets = generate_study(spec, make_patient(7))
    paths = write_study(datasets, tmp_path)

    assert len(paths) == 2 * 3 + 1
    for path in paths:
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM", path
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.pixel_array.shape[:2] == (64, 64)
        assert 5_000 < len(raw) < 40_000, (path, len(raw))


def test_same_seed_same_bytes_different_seed_different_study(tmp_path: Path) -> None:
    patient = make_patient(3)
    first = write_study(generate_study(StudySpec(seed=11), patient), tmp_path / "a")
    second = write_study(generate_study(StudySpec(seed=11), patient), tmp_path / "b")
    other = write_study(generate_study(StudySpec(seed=12), patient), tmp_path / "c")

    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(other)
    assert make_patient(3) == patient
    assert make_patient(4) != patient


def test_generation_is_deterministic_across_processes(tmp_path: Path) -> None:
    # Guards against anything seeded from Python's per-process salted hash().
    script = (
        "import sys, hashlib; from pathlib import Path;"
        "from pixl_stack.studygen import generate_cohort;"
        "s = generate_cohort(2, Path(sys.argv[1]), seed=5);"
        "print(hashlib.sha256(b''.join(f.read_bytes() for x in s for f in x.files)).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / name)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for name in ("one", "two")
    }
    assert len(digests) == 1


def test_identifying_values_sit_in_every_claimed_place() -> None:
    patient = make_patient(21)
    site = staff_and_site(patient)
    accession = "QZ12345678"
    ds = generate_study(StudySpec(modality="CT", accession=accession), patient)[1]
    family, given = patient.name.split("^")[:2]

    assert str(ds.PatientName) == patient.name
    assert len(patient.name.split("^")) >= 3
    assert ds.PatientID == patient.mrn
    assert list(ds.OtherPatientIDs) == list(patient.other_ids)
    assert [item.PatientID for item in ds.OtherPatientIDsSequence] == list(patient.other_ids)
    assert ds.PatientBirthDate == patient.birth_date
    assert ds.PatientAddress == patient.address
    assert list(ds.PatientTelephoneNumbers) == list(patient.telephone)
    assert ds.AccessionNumber == accession
    assert ds.StudyID == accession
    assert f"{family} {given}" in ds.StudyDescription
    assert ds.InstitutionName == site.institution_name
    assert ds.InstitutionAddress == site.institution_address
    assert str(ds.ReferringPhysicianName) == site.referring_physician
    assert str(ds.OperatorsName) == site.operator
    assert str(ds.PerformingPhysicianName) == site.performing_physician
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert block[0x01].value == patient.mrn
    assert str(block[0x02].value) == patient.name
    request = ds.RequestAttributesSequence[0]
    assert request.AccessionNumber == accession
    assert request.RequestedProcedureID == accession
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
    assert ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID

    # And every listed value really occurs somewhere in the instance.
    text = "\n".join(_text_values(ds))
    missing = {value for value in identifying_values(patient, accession) if value not in text}
    assert not missing


def test_references_point_at_instances_of_the_same_study() -> None:
    datasets = generate_study(
        StudySpec(modality="MR", series=3, instances_per_series=4, secondary_capture=True),
        make_patient(2),
    )
    sop_uids = {ds.SOPInstanceUID for ds in datasets}
    assert len(sop_uids) == len(datasets) == 13
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 4

    referenced = [
        item.ReferencedSOPInstanceUID
        for ds in datasets
        for keyword in ("ReferencedImageSequence", "SourceImageSequence")
        for item in ds.get(keyword, [])
    ]
    assert len(referenced) > 10
    assert set(referenced) <= sop_uids

    image_series = [ds for ds in datasets if ds.SOPClassUID != SecondaryCaptureImageStorage]
    for series_uid in {ds.SeriesInstanceUID for ds in image_series}:
        frames = {
            ds.FrameOfReferenceUID for ds in image_series if ds.SeriesInstanceUID == series_uid
        }
        assert len(frames) == 1


def test_ultrasound_has_regions_and_burned_in_variants_are_marked() -> None:
    patient = make_patient(9)
    plain = generate_study(StudySpec(modality="US"), patient)
    burned = generate_study(StudySpec(modality="US", burned_in=True), patient)

    for ds in plain:
        region = ds.SequenceOfUltrasoundRegions[0]
        assert region.RegionLocationMaxX1 == 63 and region.RegionLocationMaxY1 == 63
        assert ds.PhotometricInterpretation == "RGB"
        assert ds.BurnedInAnnotation == "NO"
    assert all(ds.BurnedInAnnotation == "YES" for ds in burned)
    assert plain[0].PixelData != burned[0].PixelData


def test_secondary_capture_is_an_extra_series_with_burned_in_text() -> None:
    datasets = generate_study(StudySpec(modality="CT", secondary_capture=True), make_patient(1))
    capture = datasets[-1]
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    assert capture.BurnedInAnnotation == "YES"
    assert capture.SeriesNumber == 3
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == datasets[0].SOPInstanceUID
    assert all(ds.SOPClassUID != SecondaryCaptureImageStorage for ds in datasets[:-1])


def test_manufacturer_size_and_descriptions_are_settable() -> None:
    patient = make_patient(1)
    assert generate_study(StudySpec(modality="MR"), patient)[0].Manufacturer == "Philips"
    assert generate_study(StudySpec(modality="CT"), patient)[0].Manufacturer == "company"
    assert generate_study(StudySpec(modality="DX"), patient)[0].Manufacturer == "Carestream"

    datasets = generate_study(
        StudySpec(
            modality="CT",
            manufacturer="Siemens",
            rows=128,
            columns=96,
            series=3,
            series_descriptions=["localiser", "axial"],
        ),
        patient,
    )
    assert {ds.Manufacturer for ds in datasets} == {"Siemens"}
    assert datasets[0].pixel_array.shape == (128, 96)
    assert [ds.SeriesDescription for ds in datasets[::3]] == ["localiser", "axial", "localiser 2"]


def test_philips_mr_carries_philips_private_block() -> None:
    ds = generate_study(StudySpec(modality="MR"), make_patient(1))[0]
    assert ds.private_block(0x2001, "Philips Imaging DD 001")[0x23].value == "90"


def test_non_ascii_names_round_trip(tmp_path: Path) -> None:
    patient = next(p for p in map(make_patient, range(200)) if not p.name.isascii())
    path = write_study(generate_study(StudySpec(), patient), tmp_path)[0]
    assert str(pydicom.dcmread(path).PatientName) == patient.name


def test_unknown_modality_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'PT'"):
        generate_study(StudySpec(modality="PT"), make_patient(1))


def test_cohort_cycles_modalities_and_reuses_some_patients(tmp_path: Path) -> None:
    studies = generate_cohort(6, tmp_path, seed=2, modalities=("CT", "US"))

    assert all(isinstance(study, GeneratedStudy) for study in studies)
    assert [study.modality for study in studies] == ["CT", "US"] * 3
    assert len({study.accession for study in studies}) == 6
    assert len({study.study_uid for study in studies}) == 6
    assert studies[4].patient == studies[3].patient
    assert len({study.patient.mrn for study in studies}) == 5
    for study in studies:
        assert study.instance_count == len(study.files) == 6
        ds = pydicom.dcmread(study.files[0])
        assert ds.AccessionNumber == study.accession
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.StudyDate == study.study_date.strftime("%Y%m%d")
        assert ds.PatientID == study.patient.mrn
