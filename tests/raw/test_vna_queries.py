"""The operator's C-FIND criteria, turned into a DICOM query (no archive needed)."""

from __future__ import annotations

import pytest

from orthanc_plugins.raw.vna import VnaQueryError, build_query, dicom_date_range


@pytest.mark.parametrize(("text", "dicom"), [
    ("2020-01-31", "20200131"),
    ("20200131", "20200131"),
    ("2020-01-01-2020-12-31", "20200101-20201231"),
    ("20200101-20201231", "20200101-20201231"),
    ("2020-01-01-", "20200101-"),
    ("-2020-12-31", "-20201231"),
])
def test_dates_and_ranges_become_dicom_ranges(text, dicom):
    assert dicom_date_range(text) == dicom


@pytest.mark.parametrize(("text", "message"), [
    ("2020-02-30", "date 2020-02-30 is not a calendar date"),
    ("yesterday", "date must be FROM or FROM-TO"),
    ("-", "date must be FROM or FROM-TO"),
    ("2021-01-01-2020-01-01", "the date range ends before it starts"),
])
def test_a_bad_date_is_one_clear_error(text, message):
    with pytest.raises(VnaQueryError, match=message):
        dicom_date_range(text)


def test_the_query_asks_for_counts_and_modalities():
    query = build_query({"mrn": "123", "modality": "ct", "date": "2020-01-01-"})
    assert query == {
        "PatientID": "123", "AccessionNumber": "", "StudyInstanceUID": "", "StudyDate": "20200101-",
        "ModalitiesInStudy": "CT", "NumberOfStudyRelatedSeries": "", "NumberOfStudyRelatedInstances": "",
    }


def test_an_unbounded_or_unknown_query_is_refused_without_quoting_values():
    with pytest.raises(VnaQueryError, match="give at least one of"):
        build_query({"modality": "CT", "mrn": ""})
    with pytest.raises(VnaQueryError, match="unknown criteria: name") as refused:
        build_query({"name": "SMITH^JOHN"})
    assert "SMITH" not in str(refused.value)
    with pytest.raises(VnaQueryError, match="modality must be a DICOM modality code") as refused:
        build_query({"mrn": "999123", "modality": "C*T"})
    assert "999123" not in str(refused.value)
