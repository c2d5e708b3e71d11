"""The de-identified study as it will leave: a zip on anon's disk, written as it is made.

Each kept instance goes into `<staging>/job-<id>.zip.partial` the moment it is
de-identified (stored, not deflated: pixel data barely compresses and deflate
would cost more CPU than the whole de-identification), and the zip is renamed
to `job-<id>.zip` only once the study is complete, so a zip that exists is
whole. The export reads it from disk, one instance at a time: no study is
ever held in memory, and exporting needs nothing from anon's Orthanc.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path


class StagedStudy:
    """The staging zip of one job."""

    def __init__(self, staging_dir: Path, job_id: int):
        self.path = staging_dir / f"job-{job_id}.zip"
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._zip: zipfile.ZipFile | None = None
        self.names_by_series: dict[str, list[str]] = {}
        self._names: set[str] = set()

    def exists(self) -> bool:
        return self.path.is_file()

    def open_for_writing(self) -> StagedStudy:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self.partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.names_by_series = {}
        self._names = set()
        return self

    def add(self, series_uid: str, sop_instance_uid: str, data: bytes) -> None:
        assert self._zip is not None, "open_for_writing() first"
        name = f"{series_uid}/{sop_instance_uid}.dcm"
        if name in self._names:
            return  # the same instance twice in the source: it is one instance
        self._zip.writestr(name, data)
        self._names.add(name)
        self.names_by_series.setdefault(series_uid, []).append(name)

    def drop_series(self, series_uids: Iterable[str]) -> None:
        """Remove whole series (below a project's minimum) by rewriting the zip without them."""
        drop = set(series_uids)
        if not drop:
            return
        self._close()
        rewritten = self.partial.with_name(self.partial.name + ".rewrite")
        with zipfile.ZipFile(self.partial) as source, zipfile.ZipFile(
                rewritten, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as target:
            for info in source.infolist():
                if info.filename.split("/", 1)[0] not in drop:
                    with source.open(info) as src, target.open(info.filename, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(rewritten, self.partial)
        self._zip = zipfile.ZipFile(self.partial, "a", compression=zipfile.ZIP_STORED, allowZip64=True)
        for series_uid in drop:
            self._names.difference_update(self.names_by_series.pop(series_uid, []))

    def publish(self) -> Path:
        """The study is complete: make the zip visible to the export."""
        self._close()
        with open(self.partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.path)
        return self.path

    def instance_uids(self) -> list[tuple[str, str]]:
        """(series UID, SOP Instance UID) of every instance in the published zip."""
        with zipfile.ZipFile(self.path) as archive:
            names = [name for name in archive.namelist() if name.endswith(".dcm")]
        return [tuple(name.removesuffix(".dcm").split("/", 1)) for name in names]  # type: ignore[misc]

    def discard(self) -> None:
        self._close()
        for path in (self.partial, self.path):
            path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    @property
    def instance_count(self) -> int:
        return sum(len(names) for names in self.names_by_series.values())
