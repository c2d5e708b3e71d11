"""Destination `example-folder`: copies each study's zip into a folder; and the two
lifecycle hooks, which append what they are told to JSON-lines files beside the zips.

The folder is the secret `<alias>--example--folder`. With the secret
`<alias>--example--fail-hooks` set to "yes", both lifecycle hooks raise after
writing, as a site's broken step would. A third-party plugin needs only
`pixl_hooks` and the arguments its hooks receive.
"""

import dataclasses
import json
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
STUDIES_LOG = "exported-studies.jsonl"
EXTRACTS_LOG = "finished-extracts.jsonl"


def _folder(project, secrets) -> Path:
    name = f"{project.secret_alias}--example--folder"
    try:
        return Path(secrets.get(name))
    except KeyError:
        raise DestinationMisconfigured(f"secret {name!r} is not set") from None


def _note(project, secrets, log_name: str, entry: dict) -> None:
    target = _folder(project, secrets) / project.slug / log_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
    try:
        broken = secrets.get(f"{project.secret_alias}--example--fail-hooks") == "yes"
    except KeyError:
        broken = False
    if broken:
        raise RuntimeError(f"example step broken after writing {log_name}")


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


@hookimpl
def pixl_study_exported(project, study, receipt, secrets):
    _note(project, secrets, STUDIES_LOG, {
        **dataclasses.asdict(study), "receipt": dataclasses.asdict(receipt) if receipt else None,
    })


@hookimpl
def pixl_extract_finished(project, extract_name, summary, secrets):
    _note(project, secrets, EXTRACTS_LOG, {"extract": extract_name, **dataclasses.asdict(summary)})
