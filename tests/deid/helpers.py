"""Helpers of the de-identification tests: our own projects and rules, fixed keys,
and a way to collect every value of a dataset at every depth."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import deid_data
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

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
