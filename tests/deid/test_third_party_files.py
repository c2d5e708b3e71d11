"""The engine on real third-party DICOM files shipped in PyPI packages: pydicom's own test
files (those in the wheel) and the `deid-data` package."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from io import BytesIO

import pydicom

from orthanc_plugins.anon.deid import engine
from orthanc_plugins.anon.deid.engine import KEPT, QUARANTINED, deidentify_instance

from .helpers import KEY, all_text, third_party_files, write_bytes

# Words of the de-identification record the engine writes (CID 7050 meanings), e.g. "Patient".
RECORD_WORDS = {word.lower() for name in dir(engine) if name.startswith("RETAIN_")
                or name in ("BASIC_PROFILE", "CLEAN_PIXEL_DATA")
                for word in getattr(engine, name)[1].split()}
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
    "PatientAddress", "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress",
    "ReferringPhysicianName", "OperatorsName", "PerformingPhysicianName",
)


def _identifiers(ds) -> set[str]:
    found = set()
    manufacturer = re.split(r"[\W_]+", str(ds.get("Manufacturer") or "").lower())
    for keyword in IDENTIFYING_KEYWORDS:
        value = ds.get(keyword)
        values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
        for item in values:
            text = str(item or "").strip()
            for part in {text, *text.split("^")}:
                if keyword == "InstitutionName" and set(re.split(r"[\W_]+", part.lower())) <= set(manufacturer):
                    continue  # the Manufacturer, kept, says as much (not an identifier)
                if part.strip().lower() in RECORD_WORDS:
                    continue
                if len(part.strip()) >= 3 and part.strip().lower() != "anonymous":
                    found.add(part.strip())
    return found


def test_no_identifying_value_of_a_third_party_file_survives(permissive) -> None:
    files = third_party_files()
    assert len(files) > 100
    statuses: Counter[str] = Counter()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = pydicom.dcmread(path, force=True)
        if "Modality" not in source:
            source.Modality = "OT"  # e.g. deid-data's cookies: exercise the rules, not the filter
        if not source.get("PatientID"):
            source.PatientID = "TP-0001"  # without one the instance is quarantined
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

