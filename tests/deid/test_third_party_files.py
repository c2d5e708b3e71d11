"""The engine on real third-party DICOM files shipped in PyPI packages: pydicom's own test
files (those in the wheel) and the `deid-data` package."""

from __future__ import annotations

import warnings
from collections import Counter
from io import BytesIO

import pydicom

from orthanc_plugins.anon.deid.engine import KEPT, QUARANTINED, deidentify_instance

from .helpers import KEY, identifying_values, leak_finder, third_party_files, write_bytes


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
        identifiers = identifying_values(source)
        first_leak = leak_finder(source)
        result = deidentify_instance(source, permissive, KEY)
        statuses[result.status] += 1
        if result.status == QUARANTINED:
            assert all(value not in result.reason for value in identifiers), path.name
            continue
        if result.status != KEPT:
            continue
        out = pydicom.dcmread(BytesIO(write_bytes(result.dataset)))
        out.decode()
        assert first_leak(out) is None, path.name
    assert statuses[KEPT] >= 100, statuses
    assert statuses[QUARANTINED] >= 1, statuses

