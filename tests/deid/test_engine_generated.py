"""The engine on generated studies: nothing identifying survives, references follow the new
UIDs, pseudonyms are stable per project and differ between projects."""

from __future__ import annotations

import datetime
import shutil
from io import BytesIO

import pydicom
import pytest

from orthanc_plugins.anon.deid.engine import KEPT, deidentify_instance
from pixl_stack.studygen import (
    PRIVATE_CREATOR,
    StudySpec,
    generate_study,
    identifying_values,
    make_patient,
)

from .helpers import KEY, OTHER_KEY, all_text, write_bytes


def _study(modality: str = "CT", seed: int = 3, **spec):
    patient = make_patient(seed)
    datasets = generate_study(StudySpec(modality=modality, seed=seed, **spec), patient)
    return patient, datasets, [write_bytes(ds) for ds in datasets]


@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "DX", "US"])
def test_no_identifying_value_survives_anywhere(demo, modality) -> None:
    patient, datasets, files = _study(modality)
    secrets = identifying_values(patient, str(datasets[0].AccessionNumber))
    old_uids = {str(ds.SOPInstanceUID) for ds in datasets} | {str(datasets[0].StudyInstanceUID)}
    for data in files:
        result = deidentify_instance(data, demo, KEY)
        assert result.status == KEPT, result.reason
        out = pydicom.dcmread(BytesIO(result.data))
        for tag, text in all_text(out):
            for secret in secrets:
                if secret == patient.birth_date and "UI" in tag:
                    continue
                assert secret.lower() not in text.lower(), f"{tag} keeps an identifying value"
            for uid in old_uids:
                assert uid not in text, f"{tag} keeps a source UID"
        assert out.PatientIdentityRemoved == "YES"
        assert out.PatientID == result.pseudo_patient_id
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID == result.sop_instance_uid


def test_references_inside_sequences_resolve_to_the_new_uids(demo) -> None:
    _, _, files = _study("CT", series=2, instances_per_series=3)
    outputs = [pydicom.dcmread(BytesIO(deidentify_instance(f, demo, KEY).data)) for f in files]
    new_sops = {str(ds.SOPInstanceUID) for ds in outputs}
    references = [
        str(item.ReferencedSOPInstanceUID)
        for ds in outputs
        for seq in ("ReferencedImageSequence", "SourceImageSequence")
        for item in ds.get(seq, [])
    ]
    assert len(references) >= 6
    assert set(references) <= new_sops
    # The series of the second series reference instances of the first, as in the source.
    first_series = {str(ds.SOPInstanceUID) for ds in outputs if ds.SeriesNumber == 1}
    second = [ds for ds in outputs if ds.SeriesNumber == 2]
    assert all(str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) in first_series for ds in second)
    assert len({str(ds.StudyInstanceUID) for ds in outputs}) == 1
    assert len({str(ds.FrameOfReferenceUID) for ds in outputs}) == 2


def test_two_runs_are_identical_and_two_projects_differ(demo, tmp_path) -> None:
    from orthanc_plugins.anon.deid.engine import load_compiled_project

    from .helpers import PROJECTS_DIR, TAG_RULES_DIR

    _, _, files = _study("MR")
    first = [deidentify_instance(f, demo, KEY) for f in files]
    again = [deidentify_instance(f, load_compiled_project("demo", PROJECTS_DIR, TAG_RULES_DIR), KEY)
             for f in files]
    assert [r.data for r in first] == [r.data for r in again]

    # The same rules under another project name.
    demo_yaml = (PROJECTS_DIR / "demo.yaml").read_text()
    (tmp_path / "demo-twin.yaml").write_text(demo_yaml.replace('name: "demo"', 'name: "demo-twin"'))
    shutil.copytree(PROJECTS_DIR / "image-operations", tmp_path / "image-operations")
    twin = load_compiled_project("demo-twin", tmp_path, TAG_RULES_DIR)
    for one, other, other_key in zip(first, [deidentify_instance(f, twin, KEY) for f in files],
                                     [deidentify_instance(f, demo, OTHER_KEY) for f in files]):
        for candidate in (other, other_key):
            assert candidate.sop_instance_uid != one.sop_instance_uid
            assert candidate.study_uid != one.study_uid
            assert candidate.pseudo_patient_id != one.pseudo_patient_id


def test_dates_shift_per_patient_and_keep_intervals(demo) -> None:
    patient = make_patient(11)
    early = generate_study(StudySpec(seed=1, study_date="20200101", series=1, instances_per_series=1), patient)
    late = generate_study(StudySpec(seed=2, study_date="20200311", series=1, instances_per_series=1), patient)
    a = deidentify_instance(early[0], demo, KEY).dataset
    b = deidentify_instance(late[0], demo, KEY).dataset

    def day(ds):
        return datetime.datetime.strptime(ds.StudyDate, "%Y%m%d").date()

    assert day(a) != datetime.date(2020, 1, 1)
    assert (day(b) - day(a)).days == 70
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [item.CodeValue for item in a.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and "113107" in codes and "113106" not in codes
    assert a.PatientBirthDate == "00010101"


def test_id_pairs_name_the_source_and_new_identifiers(demo) -> None:
    _, datasets, files = _study("DX", series=1, instances_per_series=1)
    result = deidentify_instance(files[0], demo, KEY)
    pairs = {pair.kind: pair for pair in result.id_pairs}
    assert pairs["patient_id"].id_old == datasets[0].PatientID
    assert pairs["patient_id"].id_new == result.pseudo_patient_id
    assert pairs["study_uid"] .id_old == datasets[0].StudyInstanceUID
    assert pairs["study_uid"].id_new == result.study_uid
    assert pairs["sop_instance_uid"].id_new == result.sop_instance_uid
    assert set(pairs) == {"patient_id", "study_uid", "series_uid", "sop_instance_uid"}


def test_a_dataset_input_is_deidentified_in_place_and_metadata_is_reported(demo) -> None:
    _, datasets, _ = _study("MR", series=1, instances_per_series=1)
    result = deidentify_instance(datasets[0], demo, KEY)
    assert result.dataset is datasets[0] and result.data is None
    assert (result.modality, result.series_number, result.series_description) == ("MR", 1, "T1 axial")
    # The Philips private element survives with its creator (manufacturer override), the
    # site's private block with identifiers does not.
    out = result.dataset
    assert out[0x20010010].value == "Philips Imaging DD 001" and 0x20011023 in out
    assert all(elem.value != PRIVATE_CREATOR for elem in out)
    assert "113111" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
