"""Destination `example-folder`: copies each study's zip into a folder.

The folder is the secret `<alias>--example--folder`. A third-party
destination needs only `pixl_hooks` and the arguments its hooks receive.
"""

import shutil
from pathlib import Path

from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import (
    DestinationInfo,
    DestinationMisconfigured,
    ExportReceipt,
    settings_problems,
)

NAME = "example-folder"


def _folder(project, secrets) -> Path:
    name = f"{project.secret_alias}--example--folder"
    try:
        return Path(secrets.get(name))
    except KeyError:
        raise DestinationMisconfigured(f"secret {name!r} is not set") from None


@hookimpl
def pixl_destinations():
    return [DestinationInfo(NAME, dicom=True, parquet=False, description="copy zips to a folder")]


@hookimpl
def pixl_check_destination(project, destination_name, secrets):
    if destination_name != NAME:
        return None
    return settings_problems(_folder, project, secrets)


@hookimpl
def pixl_export_dicom_study(project, destination_name, study, secrets):
    if destination_name != NAME:
        return None
    target = _folder(project, secrets) / project.slug / f"{study.pseudo_study_uid}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study.zip_path, target)
    return ExportReceipt(NAME, location=str(target), files=len(study.instance_names()))
