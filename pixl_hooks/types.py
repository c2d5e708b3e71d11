"""The values that flow through PIXL's hooks, the errors destinations raise, and
`settings_problems` for answering `pixl_check_destination`.

A destination plugin needs only this module, `pixl_hooks.hookspecs` (for the
`hookimpl` marker) and the project configuration it is handed
(`orthanc_plugins.common.projects.ProjectConfig`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DestinationInfo:
    """What a destination plugin offers: its name in project files, and what it can receive."""

    name: str
    dicom: bool
    parquet: bool
    description: str = ""


@dataclass(frozen=True)
class ExportableStudy:
    """One de-identified study, ready to leave PIXL.

    `zip_path` is a zip of the study's DICOM files (as Orthanc's
    `/studies/{id}/archive` answers, or made by `zip_dicom_files`). Only
    pseudonymised identifiers travel with it.
    """

    pseudo_patient_id: str
    pseudo_study_uid: str
    zip_path: Path

    def instance_names(self) -> list[str]:
        """Names in the zip of the study's DICOM instances (not folders, not a DICOMDIR)."""
        with zipfile.ZipFile(self.zip_path) as archive:
            return [info.filename for info in archive.infolist() if _is_instance(info)]

    def iter_instances(self) -> Iterator[bytes]:
        """The bytes of each DICOM instance in the zip, one at a time."""
        with zipfile.ZipFile(self.zip_path) as archive:
            for info in archive.infolist():
                if _is_instance(info):
                    yield archive.read(info)


def _is_instance(info: zipfile.ZipInfo) -> bool:
    return not info.is_dir() and not info.filename.upper().endswith("DICOMDIR")


def zip_dicom_files(files: Iterable[Path], zip_path: Path) -> Path:
    """Write DICOM files into a study zip for `ExportableStudy` (names are the files' names)."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, arcname=Path(path).name)
    return zip_path


@dataclass(frozen=True)
class ExportReceipt:
    """What a destination says it did. `location` never holds a secret (no host, no user)."""

    destination: str
    location: str | None
    files: int = 0


@dataclass(frozen=True)
class ExportedStudy:
    """A study its destination confirmed, as `pixl_study_exported` sees it: pseudonymised
    identifiers and internal IDs only."""

    job_id: int
    pseudo_patient_id: str
    pseudo_study_uid: str
    extract_name: str
    procedure_occurrence_id: int | None = None  # OMOP extracts only


@dataclass(frozen=True)
class ExtractSummary:
    """How every study of an extract ended, as `pixl_extract_finished` sees it."""

    studies: int
    exported: int = 0
    not_found: int = 0
    failed: int = 0
    skipped: int = 0


class DestinationError(Exception):
    """An export failed. `retryable` says whether trying again later may succeed.

    Messages are shown to operators and stored in the database: they name the
    destination, the pseudonymised study and the secret names involved, never a
    secret's value nor an identifying value.
    """

    retryable = False


class DestinationUnavailable(DestinationError):
    """The destination could not be reached or answered with a transient failure."""

    retryable = True


class DestinationIncomplete(DestinationError):
    """The destination confirmed only part of a study; sending it again may complete it."""

    retryable = True


class DestinationRejected(DestinationError):
    """The destination refused the data or the credentials."""


class DestinationMisconfigured(DestinationError):
    """The project's destination settings are missing or wrong; an operator must fix them."""


class UnknownDestination(DestinationMisconfigured):
    """No installed plugin provides the destination a project names."""


def settings_problems(read_settings: Callable[..., object], *args: Any) -> list[str]:
    """For `pixl_check_destination`: no problems if `read_settings(*args)` succeeds, else
    the message of the `DestinationMisconfigured` it raises, as the one problem."""
    try:
        read_settings(*args)
    except DestinationMisconfigured as exc:
        return [str(exc)]
    return []
