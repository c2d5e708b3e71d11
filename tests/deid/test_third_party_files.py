"""The engine on real third-party DICOM files shipped in PyPI packages: pydicom's own test
files (those in the wheel) and the `deid-data` package."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from io import BytesIO
from pathlib import Path

import deid_data
import pydicom
import pydicom.data
import pytest

from orthanc_plugins.anon.deid.engine import (
    KEPT,
    QUARANTINED,
    deidentify_instance,
    load_compiled_project,
    write_bytes,
)

from .helpers import KEY, TAG_RULES_DIR, all_text, write_project

IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
    "PatientAddress", "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress",
    "ReferringPhysicianName", "OperatorsName", "PerformingPhysicianName",
)


def _third_party_files() -> list[Path]:
    pydicom_files = [Path(f) for f in pydicom.data.get_testdata_files()]
    deid_files = sorted((Path(deid_data.__file__).parent / "data").rglob("*.dcm"))
    return [
        path for path in pydicom_files + deid_files
        if path.is_file() and path.suffix not in (".json", ".txt", ".dump", ".gz")
        and not path.name.startswith(("README", "DICOMDIR"))
    ]


@pytest.fixture(scope="module")
def permissive(tmp_path_factory):
    """Our rules, every modality, every manufacturer, burned-in risks allowed: the rules and
    the leak guard are what is under test here."""
    folder = tmp_path_factory.mktemp("projects")
    write_project(folder, "third-party", """  modalities: ["CT", "MR", "CR", "DX", "US", "PT", "OT", "NM", "XA", "MG", "RTDOSE",
                 "RTPLAN", "RTSTRUCT", "RTIMAGE", "SR", "ECG", "SC", "KO", "PR", "SEG"]
tag_operation_files:
  base: ["base.yaml", "ct.yaml", "mr.yaml", "xray.yaml", "us.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
burned_in_text: {allow_burned_in_annotation: true, allow_secondary_capture: true, allow_screen_save: true}
destination: {dicom: "none", parquet: "none"}
""")
    return load_compiled_project("third-party", folder, TAG_RULES_DIR)


def _identifiers(ds) -> set[str]:
    found = set()
    for keyword in IDENTIFYING_KEYWORDS:
        value = ds.get(keyword)
        values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
        for item in values:
            text = str(item or "").strip()
            for part in {text, *text.split("^")}:
                if len(part.strip()) >= 3 and part.strip().lower() != "anonymous":
                    found.add(part.strip())
    return found


def test_no_identifying_value_of_a_third_party_file_survives(permissive) -> None:
    files = _third_party_files()
    assert len(files) > 100
    statuses: Counter[str] = Counter()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = pydicom.dcmread(path, force=True)
        if "Modality" not in source:
            source.Modality = "OT"  # e.g. deid-data's cookies: exercise the rules, not the filter
        identifiers = _identifiers(source)
        source_uids = {str(source.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                    "SOPInstanceUID") if source.get(k)}
        birth_date = str(source.get("PatientBirthDate", "") or "")
        result = deidentify_instance(source, permissive, KEY)
        statuses[result.status] += 1
        if result.status == QUARANTINED:
            assert all(value not in result.reason for value in identifiers), path.name
            continue
        if result.status != KEPT:
            continue
        out = pydicom.dcmread(BytesIO(write_bytes(result.dataset)))
        out.decode()
        for tag, text in all_text(out):
            for value in identifiers | source_uids:
                if value == birth_date and tag.startswith("(0020") or value in ("", "None"):
                    continue
                # As a word: "Mary" may be inside "PRIMARY" without leaking anything.
                found = re.search(rf"(?<![0-9a-z]){re.escape(value.lower())}(?![0-9a-z])", text.lower())
                assert found is None, f"{path.name}: {tag} keeps a source value"
    assert statuses[KEPT] >= 100, statuses
    assert statuses[QUARANTINED] >= 1, statuses

