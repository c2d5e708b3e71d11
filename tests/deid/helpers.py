"""Helpers of the de-identification tests: our own projects and rules, fixed keys,
and a way to collect every value of a dataset at every depth."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import deid_data
import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from orthanc_plugins.anon.deid import engine
from orthanc_plugins.common.settings import REPO_ROOT

PROJECTS_DIR = REPO_ROOT / "projects"
TAG_RULES_DIR = REPO_ROOT / "tag_rules"
KEY = b"test-key-0123456789abcdef-0123456789"
OTHER_KEY = b"another-key-0123456789abcdef-012345"


def write_bytes(ds: Dataset) -> bytes:
    """pydicom's own writing of a dataset: the reference for the engine's writer."""
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_project(folder: Path, slug: str, body: str) -> Path:
    """A project file in `folder` (with our tag rules beside it via --tag-rules-dir)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.yaml"
    path.write_text(f'project:\n  name: "{slug}"\n' + body, encoding="utf-8")
    return path


def third_party_files() -> list[Path]:
    """Real DICOM files shipped in PyPI packages: pydicom's own test files (those in the
    wheel) and the `deid-data` package's."""
    pydicom_files = [Path(f) for f in pydicom.data.get_testdata_files()]
    deid_files = sorted((Path(deid_data.__file__).parent / "data").rglob("*.dcm"))
    return [
        path for path in pydicom_files + deid_files
        if path.is_file() and path.suffix not in (".json", ".txt", ".dump", ".gz")
        and not path.name.startswith(("README", "DICOMDIR"))
    ]


def all_text(ds: Dataset) -> Iterator[tuple[str, str]]:
    """(tag, text) of every element at every depth, the file meta and private tags included."""
    datasets = [ds]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        datasets.append(meta)
    for current in datasets:
        for elem in current.iterall():
            if elem.VR == "SQ" or elem.tag == 0x7FE00010 or elem.tag.element == 0:
                continue  # group lengths: the writer's byte counts, nothing of the source
            value = elem.value
            if isinstance(value, bytes):
                yield str(elem.tag), value.decode("latin-1")
                yield str(elem.tag), value.decode("utf-8", "replace")
            else:
                yield str(elem.tag), str(value)


# Words of the de-identification record the engine writes (CID 7050 meanings), e.g. "Patient".
RECORD_WORDS = {word.lower() for name in dir(engine) if name.startswith("RETAIN_")
                or name in ("BASIC_PROFILE", "CLEAN_PIXEL_DATA")
                for word in getattr(engine, name)[1].split()}
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
    "PatientAddress", "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress",
    "ReferringPhysicianName", "OperatorsName", "PerformingPhysicianName",
)


def identifying_values(ds: Dataset) -> set[str]:
    """The identifying values of a source (names and their parts, IDs, dates, places)."""
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


def leak_finder(source: Dataset) -> Callable[[Dataset], str | None]:
    """Read before de-identifying (the engine changes a dataset in place): a function giving
    the tag of the first element of an output that holds an identifying value or an instance
    UID of `source`, as a word, or None."""
    identifiers = identifying_values(source)
    uids = {str(source.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                         "SOPInstanceUID") if source.get(k)}
    birth_date = str(source.get("PatientBirthDate", "") or "")

    def first_leak(out: Dataset) -> str | None:
        for tag, text in all_text(out):
            for value in identifiers | uids:
                if value == birth_date and tag.startswith("(0020") or value in ("", "None"):
                    continue
                # As a word: "Mary" may be inside "PRIMARY" without leaking anything.
                if re.search(rf"(?<![0-9a-z]){re.escape(value.lower())}(?![0-9a-z])", text.lower()):
                    return tag
        return None

    return first_leak
