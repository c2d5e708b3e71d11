"""Destination `none`: nothing leaves PIXL.

De-identified studies stay in orthanc-anon and are marked exported; the
parquet export is written locally under EXPORT_ROOT only.
"""

from __future__ import annotations

from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import DestinationInfo, ExportReceipt

NAME = "none"


@hookimpl
def pixl_destinations():
    return [DestinationInfo(NAME, dicom=True, parquet=True,
                            description="keep everything inside PIXL; upload nothing")]


@hookimpl
def pixl_check_destination(destination_name):
    return [] if destination_name == NAME else None


@hookimpl
def pixl_export_dicom_study(destination_name, study):
    if destination_name != NAME:
        return None
    return ExportReceipt(NAME, location=None, files=len(study.instance_names()))


@hookimpl
def pixl_export_parquet(destination_name, parquet_dir):
    if destination_name != NAME:
        return None
    files = sum(1 for path in parquet_dir.rglob("*") if path.is_file())
    return ExportReceipt(NAME, location=None, files=files)
