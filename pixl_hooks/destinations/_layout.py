"""Where study zips and parquet exports go on a file server (FTPS, SFTP), as in PIXL:

    <project slug>/<pseudonymised study UID>.zip           one zip per study
    <project slug>/<extract>/parquet/omop/public/...        the parquet export
    <project slug>/<extract>/parquet/radiology/IMAGE_LINKER.parquet

and how each appears complete or not at all: a study goes up as `<uid>.zip.part`
and is renamed when complete; the parquet tree goes up into `parquet.partial`
and takes the place of `parquet` when complete.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARQUET_FOLDER = "parquet"
PARTIAL_PARQUET_FOLDER = f"{PARQUET_FOLDER}.partial"


def study_zip_name(study: Any) -> str:
    """The name of a study's zip in its project's folder."""
    return f"{study.pseudo_study_uid}.zip"


def partial_name(name: str) -> str:
    """The name a file has while it is being written."""
    return f"{name}.part"


def extract_folder(project_slug: str, extract_name: str) -> str:
    """The folder (relative to the server's root) that holds an extract's `parquet` tree."""
    return f"{project_slug}/{extract_name}"


def parquet_location(project_slug: str, extract_name: str) -> str:
    return posixpath.join(extract_folder(project_slug, extract_name), PARQUET_FOLDER)


def parquet_files(parquet_dir: Path) -> list[tuple[Path, str]]:
    """Every file of a local parquet tree, with its path relative to the tree (POSIX)."""
    root = Path(parquet_dir)
    return [(path, path.relative_to(root).as_posix())
            for path in sorted(root.rglob("*")) if path.is_file()]


def replace_folder(
    source: str,
    target: str,
    *,
    exists: Callable[[str], bool],
    rename: Callable[[str, str], object],
    remove_tree: Callable[[str], object],
) -> None:
    """Put folder `source` in the place of `target` (in the current folder), removing the old
    `target` afterwards: there is never a moment with a half-replaced `target`."""
    old = f"{target}.old"
    remove_tree(old)
    had_target = exists(target)
    if had_target:
        rename(target, old)
    rename(source, target)
    if had_target:
        remove_tree(old)
