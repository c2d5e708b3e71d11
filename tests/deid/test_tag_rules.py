"""Allow-list semantics: every depth, sequences, private blocks, each operation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from orthanc_plugins.anon.deid.engine import KEPT, deidentify_instance, load_compiled_project
from pixl_stack.studygen import StudySpec, generate_study, make_patient

from .helpers import KEY, write_project

RULES = """
- {group: 0x0008, element: 0x0005, op: keep}
- {group: 0x0008, element: 0x0016, op: keep}
- {group: 0x0008, element: 0x0018, op: replace_UID}
- {group: 0x0008, element: 0x0020, op: date-shift}
- {group: 0x0008, element: 0x0050, op: secure-hash}
- {group: 0x0008, element: 0x0060, op: keep}
- {group: 0x0008, element: 0x0070, op: keep}
- {group: 0x0008, element: 0x0090, op: replace}
- {group: 0x0008, element: 0x103E, op: keep}
- {group: 0x0008, element: 0x1140, op: keep}
- {group: 0x0008, element: 0x1150, op: keep}
- {group: 0x0008, element: 0x1155, op: keep}
- {group: 0x0010, element: 0x0010, op: delete}
- {group: 0x0010, element: 0x0020, op: replace}
- {group: 0x0020, element: 0x000D, op: keep}
- {group: 0x0020, element: 0x000E, op: replace_UID}
- {group: 0x0020, element: 0x0011, op: keep}
- {group: 0x0032, element: 0x1064, op: keep}
- {group: 0x0040, element: 0x0275, op: keep}
- {group: 0x0011, element: 0x0010, op: keep, creator: "PIXL STUDYGEN"}
- {group: 0x0011, element: 0x1003, op: keep, creator: "PIXL STUDYGEN"}
- {group: 0x0013, element: 0x1001, op: keep}
- {group: 0x7FE0, element: 0x0010, op: keep}
"""


@pytest.fixture
def project(tmp_path: Path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    write_project(tmp_path / "projects", "rules-test", """  modalities: ["CT"]
tag_operation_files:
  base: ["rules.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
destination: {dicom: "none", parquet: "none"}
""")
    return load_compiled_project("rules-test", tmp_path / "projects", rules)


def _instance() -> Dataset:
    ds = generate_study(StudySpec(series=1, instances_per_series=1, seed=5), make_patient(5))[0]
    # A kept sequence holding a listed and an unlisted element, two levels deep.
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = "1.2.3.4.5"
    inner.PatientName = "Nested^Person"
    outer = Dataset()
    outer.ReferencedImageSequence = Sequence([inner])
    outer.PatientName = "Outer^Person"
    ds.RequestAttributesSequence = Sequence([outer])
    ds.add_new(0x00400275, "SQ", Sequence([outer]))  # RequestAttributesSequence, kept
    # A private element listed by the rules whose creator is not listed: removed.
    block = ds.private_block(0x0013, "SOME VENDOR", create=True)
    block.add_new(0x01, "LO", "vendor value")
    return ds


def test_unlisted_elements_are_removed_at_every_depth(project) -> None:
    result = deidentify_instance(_instance(), project, KEY)
    assert result.status == KEPT, result.reason
    out = result.dataset
    assert "PatientName" not in out  # delete
    assert "InstitutionName" not in out  # not listed
    outer = out.RequestAttributesSequence[0]
    # The kept sequence does not shield its items: unlisted names inside are removed too.
    assert "PatientName" not in outer
    inner = outer.ReferencedImageSequence[0]
    assert "PatientName" not in inner
    assert inner.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # A UID kept by "keep" is still remapped: only class UIDs survive as they are.
    assert inner.ReferencedSOPInstanceUID not in ("1.2.3.4.5", "")
    assert out.StudyInstanceUID == result.study_uid


def test_private_elements_need_their_creator(project) -> None:
    out = deidentify_instance(_instance(), project, KEY).dataset
    assert out[0x00110010].value == "PIXL STUDYGEN"
    assert 0x00111003 in out  # its creator is kept
    assert 0x00111001 not in out  # not listed
    assert 0x00131001 not in out and 0x00130010 not in out  # creator not listed


def test_operations(project) -> None:
    source = _instance()
    accession, patient_id = str(source.AccessionNumber), str(source.PatientID)
    study_date = str(source.StudyDate)
    out = deidentify_instance(source, project, KEY).dataset
    assert out.ReferringPhysicianName == "ANONYMOUS"  # replace: a dummy of the VR
    assert len(out.AccessionNumber) == 16 and out.AccessionNumber != accession  # secure-hash, SH
    assert len(out.PatientID) == 64 and out.PatientID != patient_id  # replace on PatientID: pseudonym
    assert out.StudyDate != study_date and len(out.StudyDate) == 8
    again = deidentify_instance(_instance(), project, KEY).dataset
    assert (again.AccessionNumber, again.PatientID) == (out.AccessionNumber, out.PatientID)


def test_manufacturer_overrides_apply_only_to_matching_manufacturers(demo) -> None:
    patient = make_patient(8)
    philips = generate_study(StudySpec(modality="MR", series=1, instances_per_series=1), patient)[0]
    other = generate_study(StudySpec(modality="MR", series=1, instances_per_series=1,
                                     manufacturer="Philips-like Inc"), patient)[0]
    other.Manufacturer = "Acme"
    assert 0x20011023 in deidentify_instance(philips, demo, KEY).dataset
    assert 0x20011023 not in deidentify_instance(other, demo, KEY).dataset
