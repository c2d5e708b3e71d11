"""The leak classes of issue 11, one adversarial file (or a few) built here per class:
pixel data, burned-in text, private creators, opaque private values, the leak guard,
missing patient IDs and the smaller ones. Each test failed before its fix."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import JPEGBaseline8Bit

from orthanc_plugins.anon.deid.engine import (
    KEPT,
    QUARANTINED,
    deidentify_instance,
    load_compiled_project,
)
from pixl_stack.studygen import StudySpec, generate_study, make_patient

from .helpers import KEY, TAG_RULES_DIR, write_bytes, write_project

PATIENT = make_patient(41)
SECRET = b"SMITH 1954-10-21 NHS 943 476 5919"


def _one(modality: str = "CT", **spec) -> Dataset:
    return generate_study(StudySpec(modality=modality, series=1, instances_per_series=1, **spec),
                          PATIENT)[0]


def _testfile(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    ds.PatientID = ds.get("PatientID") or "TEST-0001"
    return ds


def _project(tmp_path: Path, slug: str, extra: str = "", modalities: str = '"CT", "MR", "US"',
             recipes: str = "", override: str = "") -> object:
    projects = tmp_path / f"projects-{slug}"
    body = f"""  modalities: [{modalities}]
tag_operation_files:
  base: ["base.yaml", "ct.yaml", "mr.yaml", "us.yaml", "xray.yaml"]
  manufacturer_overrides: {override or "null"}
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
destination: {{dicom: "none", parquet: "none"}}
{recipes}{extra}"""
    write_project(projects, slug, body)
    return load_compiled_project(slug, projects, TAG_RULES_DIR)


@pytest.fixture(scope="module")
def open_project(tmp_path_factory):
    """Every text-prone modality cleared: what is under test is the pixel data itself."""
    return _project(tmp_path_factory.mktemp("open"), "open", modalities='"CT", "MR", "US", "OT", "SC"',
                    extra="burned_in_text: {allow_secondary_capture: true, "
                          "allow_modalities: [\"US\", \"OT\", \"SC\", \"MR\"]}\n")


# --- 1. pixel data ---------------------------------------------------------------------------------


def _with_frames(ds: Dataset, transform) -> list[bytes]:
    """Rewrite each encapsulated frame with `transform`; the original frames."""
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))
    ds.PixelData = encapsulate([transform(frame) for frame in frames])
    return [frame.rstrip(b"\x00") for frame in frames]


def _out_frames(result) -> list[bytes]:
    out = pydicom.dcmread(BytesIO(result.data))
    return [f.rstrip(b"\x00") for f in generate_frames(
        out.PixelData, number_of_frames=int(out.get("NumberOfFrames") or 1))]


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def test_jpeg_comment_and_app_segments_are_stripped_without_re_encoding(open_project) -> None:
    ds = _testfile("SC_rgb_jpeg_dcmtk.dcm")
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    hidden = _jpeg_segment(0xFE, SECRET) + _jpeg_segment(0xE1, b"Exif\x00\x00" + SECRET)
    originals = _with_frames(ds, lambda f: f[:2] + hidden + f[2:] + b"TRAILING " + SECRET)
    result = deidentify_instance(write_bytes(ds), open_project, KEY)
    assert result.status == KEPT, result.reason
    assert SECRET not in result.data and b"TRAILING" not in result.data
    # Nothing was re-encoded: the frame is the original one, byte for byte.
    assert _out_frames(result) == originals
    assert any("metadata segments" in action for action in result.pixel_actions)


def test_jpeg_ls_and_jpeg_2000_comments_are_stripped(open_project) -> None:
    for name, insert in (("MR_small_jpeg_ls_lossless.dcm",
                          lambda f: f[:2] + _jpeg_segment(0xFE, SECRET) + f[2:]),
                         ("MR_small_jp2klossless.dcm", _j2k_with_comment)):
        ds = _testfile(name)
        originals = _with_frames(ds, insert)
        result = deidentify_instance(write_bytes(ds), open_project, KEY)
        assert result.status == KEPT, (name, result.reason)
        assert SECRET not in result.data, name
        assert b"Created by" not in result.data  # the encoder's own comment goes too
        # The coded data (after SOS, or SOD for JPEG 2000) is the original, byte for byte.
        start = b"\xff\x93" if "jp2k" in name else b"\xff\xda"
        assert [f[f.index(start):] for f in _out_frames(result)] == \
            [f[f.index(start):] for f in originals], name


def _j2k_with_comment(frame: bytes) -> bytes:
    """A COM segment (Rcom 1: Latin text) after SIZ, in the main header."""
    (siz_length,) = struct.unpack_from(">H", frame, 4)
    at = 4 + siz_length
    return frame[:at] + b"\xff\x64" + struct.pack(">HH", len(SECRET) + 4, 1) + SECRET + frame[at:]


def test_jpeg_and_j2k_parsers_refuse_what_they_cannot_read() -> None:
    from orthanc_plugins.anon.deid.pixels import PixelCleaningError, strip_j2k, strip_jpeg
    for bad in (b"\xff\xd8\xff\xe1\x00\x40short", b"not a jpeg"):
        with pytest.raises(PixelCleaningError):
            strip_jpeg(bad)
    with pytest.raises(PixelCleaningError):
        strip_j2k(b"\x00\x00\x00\x0cjP  \r\n\x87\n")  # JP2 boxes


def test_bytes_after_the_last_native_pixel_are_zeroed(demo) -> None:
    ds = _one("CT")
    ds.PixelData = ds.PixelData + SECRET + b"\x00" * (len(SECRET) % 2)
    result = deidentify_instance(write_bytes(ds), demo, KEY)
    assert result.status == KEPT, result.reason
    assert SECRET not in result.data
    out = pydicom.dcmread(BytesIO(result.data))
    assert len(out.PixelData) == len(ds.PixelData)  # the length is kept, the bytes are zero


def test_overlay_bits_above_high_bit_are_cleared(demo) -> None:
    ds = _one("CT")  # BitsStored 12, unsigned
    pixels = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    stored = pixels.copy()
    pixels[: len(pixels) // 2] |= 0x8000  # an embedded overlay plane in bit 15
    ds.PixelData = pixels.tobytes()
    result = deidentify_instance(write_bytes(ds), demo, KEY)
    assert result.status == KEPT, result.reason
    out = np.frombuffer(pydicom.dcmread(BytesIO(result.data)).PixelData, dtype="<u2")
    assert not (out & 0xF000).any()
    assert np.array_equal(out, stored)


def test_signed_pixels_keep_their_values_when_unused_bits_are_cleared(demo) -> None:
    ds = _one("CT")
    ds.PixelRepresentation = 1
    values = np.array([-1000, -1, 0, 2047, -2048] * (ds.Rows * ds.Columns // 5 + 1),
                      dtype="<i2")[: ds.Rows * ds.Columns]
    dirty = (values.view("<u2") & 0x0FFF) | 0x5000  # wrong bits above HighBit 11
    ds.PixelData = dirty.astype("<u2").tobytes()
    result = deidentify_instance(write_bytes(ds), demo, KEY)
    assert result.status == KEPT, result.reason
    out = np.frombuffer(pydicom.dcmread(BytesIO(result.data)).PixelData, dtype="<i2")
    assert np.array_equal(out, values)  # sign-extended from HighBit: the true values


def test_pixel_data_that_cannot_be_cleaned_losslessly_is_quarantined(open_project) -> None:
    ds = _testfile("MR_small_jpeg_ls_lossless.dcm")  # 16-bit samples in the codestream
    ds.BitsStored, ds.HighBit = 12, 11
    result = deidentify_instance(write_bytes(ds), open_project, KEY)
    assert result.status == QUARANTINED and "re-encoding" in result.reason
    short = _one("CT")
    short.PixelData = short.PixelData[:-64]
    result = deidentify_instance(write_bytes(short), open_project, KEY)
    assert result.status == QUARANTINED and "shorter" in result.reason


# --- 2. burned-in text ------------------------------------------------------------------------------


def test_ultrasound_without_regions_or_annotation_flag_is_held_back(demo) -> None:
    ds = _one("US")
    del ds.SequenceOfUltrasoundRegions
    ds.pop("BurnedInAnnotation", None)
    result = deidentify_instance(ds, demo, KEY)
    assert result.status == QUARANTINED and "modality US" in result.reason


@pytest.mark.parametrize("modality", ["XA", "SC", "OT"])
def test_text_prone_modalities_are_held_back_unless_cleared(tmp_path, modality) -> None:
    ds = _one("CT")
    ds.Modality = modality
    held = _project(tmp_path, "held", modalities=f'"{modality}"')
    result = deidentify_instance(ds, held, KEY)
    assert result.status == QUARANTINED and f"modality {modality}" in result.reason
    cleared = _project(tmp_path, "cleared", modalities=f'"{modality}"',
                       extra=f"burned_in_text: {{allow_modalities: [\"{modality}\"]}}\n")
    assert deidentify_instance(_retag(modality), cleared, KEY).status == KEPT


def _retag(modality: str) -> Dataset:
    ds = _one("CT")
    ds.Modality = modality
    return ds


def _recipe_project(tmp_path: Path, slug: str, recipe: str):
    projects = tmp_path / f"projects-{slug}"
    (projects / "image-operations").mkdir(parents=True, exist_ok=True)
    (projects / "image-operations" / "r.recipe").write_text("FORMAT dicom\n" + recipe)
    write_project(projects, slug, """  modalities: ["US", "CT"]
tag_operation_files:
  base: ["base.yaml", "ct.yaml", "us.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
image_operation_files: {deid_recipes: ["r.recipe"]}
destination: {dicom: "none", parquet: "none"}
""")
    return load_compiled_project(slug, projects, TAG_RULES_DIR)


def test_coordinates_all_blanks_the_whole_image(tmp_path) -> None:
    project = _recipe_project(tmp_path, "blank", "%filter graylist\nLABEL Blank Image\n"
                                                "    coordinates all\n")
    ds = _one("US")
    del ds.SequenceOfUltrasoundRegions
    result = deidentify_instance(ds, project, KEY)
    assert result.status == KEPT, result.reason
    assert not result.dataset.pixel_array.any()
    assert "113101" in result.option_codes


def test_recipe_criteria_and_sections_as_deid_defines_them(tmp_path) -> None:
    project = _recipe_project(tmp_path, "criteria", """
%filter blacklist
LABEL Screens of a named scanner
    contains Manufacturer GE + equals Modality US || present ImageComments

%filter graylist
LABEL Header band
    present SequenceOfUltrasoundRegions
    ctpcoordinates 0,0,64,8
""")
    us = _one("US")  # GE Healthcare: held back by the blacklist group
    result = deidentify_instance(us, project, KEY)
    assert result.status == QUARANTINED and "Screens of a named scanner" in result.reason
    other = _one("US")
    other.Manufacturer = "Acme"
    top = other.pixel_array[:8].copy()
    assert top.any()
    result = deidentify_instance(other, project, KEY)
    assert result.status == KEPT, result.reason
    out = result.dataset.pixel_array
    assert not out[:8].any() and out[8:].any()  # CTP form: x, y, width, height


def test_masking_ybr_full_blanks_to_black_not_green(tmp_path) -> None:
    project = _recipe_project(tmp_path, "ybr", "%filter graylist\nLABEL Blank Image\n"
                                              "    coordinates all\n")
    ds = _one("US")
    ds.PhotometricInterpretation = "YBR_FULL"
    result = deidentify_instance(ds, project, KEY)
    assert result.status == KEPT, result.reason
    raw = np.frombuffer(result.dataset.PixelData, dtype=np.uint8).reshape(-1, 3)
    assert (raw[:, 0] == 0).all() and (raw[:, 1:] == 128).all()


# --- 3. private creators ------------------------------------------------------------------------------


def test_private_rules_follow_the_creator_not_the_slot(demo) -> None:
    impostor = generate_study(StudySpec(modality="MR", series=1, instances_per_series=1), PATIENT)[0]
    del impostor[0x20010010]
    del impostor[0x20011023]
    impostor.add_new(0x20010010, "LO", "ACME PRIVATE 1.0")
    impostor.add_new(0x20011023, "LO", "ACME note")
    moved = generate_study(StudySpec(modality="MR", series=1, instances_per_series=1), PATIENT)[0]
    del moved[0x20010010]
    del moved[0x20011023]
    moved.add_new(0x20010030, "LO", "Philips Imaging DD 001")
    moved.add_new(0x20013023, "DS", "90")
    out = deidentify_instance(impostor, demo, KEY).dataset
    assert 0x20011023 not in out and 0x20010010 not in out
    assert "113111" not in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    out = deidentify_instance(moved, demo, KEY).dataset
    assert out[0x20013023].value == "90" and out[0x20010030].value == "Philips Imaging DD 001"


# --- 4. opaque private values ----------------------------------------------------------------------------

CSA_RULES = """- manufacturer: ^siemens
  tags:
    - {name: "SIEMENS CSA HEADER private creator", group: 0x0029, element: 0x0010, op: keep}
    - {name: "CSA Image Header Info", group: 0x0029, element: 0x1010, op: keep}
"""


def _siemens_with_csa() -> Dataset:
    ds = _one("MR", manufacturer="SIEMENS")
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + str(ds.StudyInstanceUID).encode())
    return ds


def test_csa_headers_are_refused_unless_the_project_accepts_the_risk(tmp_path) -> None:
    rules = tmp_path / "rules"
    (rules / "manufacturer-overrides").mkdir(parents=True)
    for name in ("base.yaml", "mr.yaml"):
        (rules / name).write_text((TAG_RULES_DIR / name).read_text())
    (rules / "manufacturer-overrides" / "csa.yaml").write_text(CSA_RULES)
    projects = tmp_path / "projects"
    for slug, extra in (("refusing", ""), ("accepting", "deid_options: {accept_opaque_private: true}\n")):
        write_project(projects, slug, """  modalities: ["MR"]
tag_operation_files:
  base: ["base.yaml", "mr.yaml"]
  manufacturer_overrides: ["csa.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
destination: {dicom: "none", parquet: "none"}
""" + extra)
    refusing = load_compiled_project("refusing", projects, rules)
    assert any("CSA image header" in r for r in refusing.refused_private_rules)
    result = deidentify_instance(_siemens_with_csa(), refusing, KEY)
    assert result.status == KEPT and 0x00291010 not in result.dataset
    accepting = load_compiled_project("accepting", projects, rules)
    assert accepting.refused_private_rules == ()
    # Accepted, kept, and still scanned: the study's own UID inside it is found.
    result = deidentify_instance(_siemens_with_csa(), accepting, KEY)
    assert result.status == QUARANTINED and "StudyInstanceUID" in result.reason
    clean = _siemens_with_csa()
    clean[0x00291010].value = b"SV10\x04\x03\x02\x01"
    result = deidentify_instance(clean, accepting, KEY)
    assert result.status == KEPT and result.opaque_private == ("(0029,1010)",)


# --- 5. the leak guard ------------------------------------------------------------------------------


def _plant(ds: Dataset, text: str) -> Dataset:
    ds.SeriesDescription = text  # kept by our rules
    return ds


@pytest.mark.parametrize("name, planted", [
    ("WU^LI", "Liver WU"),  # name parts under three characters
    ("MÜLLER^Hans", "müller follow-up"),  # non-ASCII case
    ("O'BRIEN^Sean", "obrien review"),  # a dropped apostrophe
    ("SMITH-JONES^Anna", "jones"),  # part of a hyphenated surname
    ("SMITH^Anna", "annasmith"),  # given and family names joined
])
def test_the_guard_finds_name_variants(demo, name, planted) -> None:
    ds = _one("CT")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    result = deidentify_instance(_plant(ds, planted), demo, KEY)
    assert result.status == QUARANTINED and "PatientName" in result.reason, planted


@pytest.mark.parametrize("planted, kind", [
    ("NHS 943 476 5919", "OtherPatientIDs"),
    ("refMRN{mrn}x", "PatientID"),
    ("born 21/10/1954", "PatientBirthDate"),
    ("born 21 Oct 1954", "PatientBirthDate"),
    ("scan of {study_date_iso}", "StudyDate"),
    ("see {study_uid}", "StudyInstanceUID"),
])
def test_the_guard_finds_identifier_variants(demo, planted, kind) -> None:
    ds = _one("CT")
    ds.PatientBirthDate = "19541021"
    ds.OtherPatientIDs = "9434765919"
    date = str(ds.StudyDate)
    text = planted.format(mrn=ds.PatientID, study_uid=ds.StudyInstanceUID,
                          study_date_iso=f"{date[:4]}-{date[4:6]}-{date[6:]}")
    result = deidentify_instance(_plant(ds, text), demo, KEY)
    assert result.status == QUARANTINED and kind in result.reason, planted


def test_the_guard_decodes_every_character_set(demo) -> None:
    for charset, name, planted in (
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "山田太郎の検査"),
        ("GB18030", "Wang^XiaoDong=王^小东", "王小东"),
    ):
        ds = _one("CT")
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        result = deidentify_instance(write_bytes(_plant(ds, planted)), demo, KEY)
        assert result.status == QUARANTINED and "PatientName" in result.reason, charset


def test_the_guard_reads_an_item_in_its_own_character_set(demo) -> None:
    nested = _one("CT")
    nested.SpecificCharacterSet = "ISO_IR 100"
    nested.PatientName = "Ægir^Åse"
    inner = Dataset()
    inner.SpecificCharacterSet = "ISO_IR 192"
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    text = "ægir".encode()
    inner._dict[BaseTag(0x00081160)] = RawDataElement(BaseTag(0x00081160), "IS", len(text), text,
                                                      0, False, True)
    nested.ReferencedImageSequence = Sequence([inner])
    result = deidentify_instance(write_bytes(nested), demo, KEY)
    assert result.status == QUARANTINED and "ReferencedImageSequence" in result.reason


def test_the_guard_reads_text_written_with_a_numeric_vr(demo) -> None:
    ds = _one("CT")
    family = PATIENT.name.split("^")[0].upper().encode()
    value = family + b" " * (len(family) % 2)
    # Series Description (kept) written with VR US: its bytes are still the name.
    ds._dict[BaseTag(0x0008103E)] = RawDataElement(BaseTag(0x0008103E), "US", len(value), value,
                                                   0, False, True)
    result = deidentify_instance(write_bytes(ds), demo, KEY)
    assert result.status == QUARANTINED and "PatientName" in result.reason


# --- 6. missing patient IDs -------------------------------------------------------------------------


@pytest.mark.parametrize("patient_id", ["", None])
def test_an_instance_without_patient_id_is_quarantined(demo, patient_id) -> None:
    ds = _one("CT")
    if patient_id is None:
        del ds.PatientID
    else:
        ds.PatientID = patient_id
    result = deidentify_instance(ds, demo, KEY)
    assert result.status == QUARANTINED and "PatientID" in result.reason


# --- 7. the smaller ones -------------------------------------------------------------------------------


def test_a_class_uid_that_is_not_registered_is_remapped(demo) -> None:
    ds = generate_study(StudySpec(series=1, instances_per_series=2), PATIENT)[1]
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = "1.2.826.0.1.3680043.9.1234.5"
    out = deidentify_instance(ds, demo, KEY).dataset
    assert out.ReferencedImageSequence[0].ReferencedSOPClassUID.startswith("2.25.")
    assert out.SOPClassUID == ds.SOPClassUID  # a registered class UID stays


@pytest.mark.parametrize("age, expected", [("095Y", "090Y"), ("089Y", "089Y"), ("1200M", None),
                                           ("5000W", "090Y"), ("030Y", "030Y")])
def test_ages_over_89_are_capped(demo, age, expected) -> None:
    ds = _one("CT")
    ds.PatientAge = age if len(age) == 4 else "100Y"
    out = deidentify_instance(ds, demo, KEY).dataset
    assert out.PatientAge == (expected or "090Y")


def test_times_of_day_are_removed_unless_the_project_keeps_them(tmp_path) -> None:
    ds = _one("CT")
    ds.AcquisitionDateTime = "20230501101112.123"
    default = _project(tmp_path, "times-default")
    out = deidentify_instance(ds, default, KEY).dataset
    assert out.StudyTime == "" and "AcquisitionDateTime" not in out or \
        len(str(out.AcquisitionDateTime)) <= 8
    keeping = _project(tmp_path, "times-kept", extra="deid_options: {times_of_day: keep}\n")
    out = deidentify_instance(_one("CT"), keeping, KEY).dataset
    assert out.StudyTime == _one("CT").StudyTime


def test_institution_name_equal_to_a_manufacturer_word_is_not_a_leak(demo) -> None:
    ds = _one("CT", manufacturer="SIEMENS Healthineers")
    ds.InstitutionName = "Siemens"
    result = deidentify_instance(ds, demo, KEY)
    assert result.status == KEPT, result.reason


def test_palette_colour_tables_and_frame_increment_pointer_are_kept(open_project) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = pydicom.data.get_testdata_file("OT-PAL-8-face.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    ds = pydicom.dcmread(path, force=True)
    ds.Modality, ds.PatientID = "OT", "PAL-0001"
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = 0x00181063
    result = deidentify_instance(ds, open_project, KEY)
    assert result.status == KEPT, result.reason
    out = result.dataset
    assert out.PhotometricInterpretation == "PALETTE COLOR"
    for keyword in ("RedPaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
                    "BluePaletteColorLookupTableData", "FrameIncrementPointer"):
        assert keyword in out, keyword
    from pydicom.pixels import apply_color_lut
    assert apply_color_lut(out.pixel_array, out).shape[-1] == 3


def test_the_report_counts_kept_files_only_and_never_overwrites_a_sop_instance(tmp_path) -> None:
    import json

    from orthanc_plugins.anon.deid.cli import main
    from pixl_stack.studygen import write_study

    folder = tmp_path / "Smith John 1954"  # input paths are often patient names
    study = generate_study(StudySpec(series=1, instances_per_series=2), PATIENT)
    study[1].SeriesDescription = PATIENT.name.replace("^", " ")  # a leak: quarantined
    write_study(study, folder)
    (folder / "copy.dcm").write_bytes((folder / "001-0001.dcm").read_bytes())  # same SOP UID
    key = tmp_path / "key"
    key.write_text(KEY.decode())
    out = tmp_path / "out"
    assert main(["--project", "demo", "--key-file", str(key), "--output", str(out),
                 str(folder)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [f["status"] for f in report["files"]] == ["kept", "quarantined", "quarantined"]
    assert "same SOP Instance UID as input #1" in report["files"][2]["reason"]
    assert len(list(out.rglob("*.dcm"))) == 1
    tags = {entry["tag"]: entry["outcomes"] for entry in report["tags"]}
    assert tags["(0008,0020) StudyDate"] == [
        {"action": "date shifted", "why": "date-shift (base.yaml)", "instances": 1}]
    text = (out / "report.json").read_text() + (out / "report.md").read_text()
    assert "Smith John" not in text and str(folder) not in text


def test_pixel_attributes_are_read_right_in_implicit_vr(demo) -> None:
    """In implicit VR the raw NumberOfFrames "1 " is two bytes, like a US value: it is read
    as the IS it is, and the instance is checked and kept."""
    from pydicom.uid import ImplicitVRLittleEndian

    ds = _one("CT")
    ds.NumberOfFrames = 1
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = write_bytes(ds)
    assert pydicom.dcmread(BytesIO(data)).original_encoding == (True, True)
    result = deidentify_instance(data, demo, KEY)
    assert result.status == KEPT, result.reason
    assert "checked: nothing hidden" in result.pixel_actions
