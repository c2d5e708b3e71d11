"""PIXL's plugin hooks: the whole extension surface, in one file.

A destination is a module (or object) with `@hookimpl` functions of these
names. It says which destination names it provides with
`pixl_destinations()`, and answers the other hooks only when
`destination_name` is one of its own, returning None otherwise, so that
several destinations can be installed side by side. Built-in destinations
(`pixl_hooks/destinations/`) are registered exactly like third-party ones,
which are found through the `pixl_destinations` entry-point group:

    [project.entry-points.pixl_destinations]
    my_destination = "my_package.my_destination"

Arguments a hook receives (an implementation may accept any subset):

- `project`: the project's `orthanc_plugins.common.projects.ProjectConfig`;
  destination settings are secrets named `<project.secret_alias>--<service>--<field>`;
- `destination_name`: the name the project file gives (`destination.dicom` or
  `destination.parquet`);
- `secrets`: an `orthanc_plugins.common.secrets.SecretStore`.

Failures are raised as `pixl_hooks.types.DestinationError` subclasses:
`DestinationUnavailable` and `DestinationIncomplete` (retryable), `DestinationRejected`,
`DestinationMisconfigured`.

Lifecycle hooks (`pixl_study_exported`, `pixl_extract_finished`) let a site run
its own step after an export, for instance linking studies to a research
database. Any plugin may implement them, with or without a destination. They
are called by orthanc-anon after the fact: what they return is ignored, and
an exception they raise is recorded (table `hook_events`, shown by
`GET /pixl/plugins` and `pixl-tui plugins`) and changes nothing else: the
study stays exported, exactly once, and the hook is not called again for it.
Each implementation is called on its own, so one plugin failing never keeps
another from being called. They run in anon's worker: keep them quick.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pixl")
hookimpl = pluggy.HookimplMarker("pixl")


@hookspec
def pixl_destinations():
    """Called when the plugins are listed and when a project's destinations are checked.

    Return a list of `pixl_hooks.types.DestinationInfo`, one per destination
    name this plugin provides (and whether each can take DICOM, parquet or both).
    """


@hookspec
def pixl_check_destination(project, destination_name, secrets):
    """Called when a project is loaded (and before an export), for each of its destinations.

    Check the settings the destination needs (that the secrets exist and make
    sense, options are valid); do not upload anything. Return a list of
    problems as sentences naming the secret or option at fault (empty when all
    is well), or None if `destination_name` is not yours.
    """


@hookspec(firstresult=True)
def pixl_export_dicom_study(project, destination_name, study, secrets):
    """Called by orthanc-anon once per de-identified study of a project.

    `study` is a `pixl_hooks.types.ExportableStudy` (pseudonymised IDs and a
    zip of its DICOM files). Send it, so that sending the same study again
    replaces or repeats it without duplicating it. Return a
    `pixl_hooks.types.ExportReceipt`, or None if `destination_name` is not yours.
    """


@hookspec(firstresult=True)
def pixl_export_parquet(project, destination_name, extract_name, parquet_dir, secrets):
    """Called by the parquet export once the extract's files are written locally.

    `parquet_dir` holds `omop/public/...` and `radiology/IMAGE_LINKER.parquet`
    of extract `extract_name` (a slug such as "2023-12-07t14-08-58"). Upload
    the whole tree so that it appears complete at the destination (PIXL's
    layout is `<project slug>/<extract_name>/parquet/...`); running it again
    must be safe. Return a `pixl_hooks.types.ExportReceipt`, or None if
    `destination_name` is not yours.
    """


@hookspec
def pixl_study_exported(project, study, receipt, secrets):
    """Called by orthanc-anon once per study, after its destination confirmed it and the
    study was recorded `exported`.

    `study` is a `pixl_hooks.types.ExportedStudy` (pseudonymised IDs, the extract,
    the OMOP procedure_occurrence_id when the extract has one; no DICOM files),
    `receipt` the destination's `pixl_hooks.types.ExportReceipt`, or None when
    anon announces a study whose exporting server stopped before it could (a
    minute later, from the database). Called once per study, whichever anon
    server exported it; a crash during the call itself loses that call, never
    the export. Return nothing.
    """


@hookspec
def pixl_extract_finished(project, extract_name, summary, secrets):
    """Called by orthanc-anon exactly once per extract, the first time every study of the
    extract has ended (exported, not_found, failed or skipped).

    `summary` is a `pixl_hooks.types.ExtractSummary` (counts by end state).
    With several anon servers exactly one calls it: the first to mark the
    extract finished in the database (a conditional UPDATE) is the one. Anon
    looks after every study it ends and, while idle, for extracts whose last
    study ended in raw (not found, failed). Retrying failed studies later does
    not call it again. Return nothing.
    """
