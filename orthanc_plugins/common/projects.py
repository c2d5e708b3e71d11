"""Project configuration: PIXL's project YAML, read and validated strictly.

One file per project, `<projects_dir>/<slug>.yaml`, in the format of the
existing PIXL system (see `projects/README.md`). Both plugins read it: raw
needs the slug, modalities and destinations; anon needs everything.

Validation is all-or-nothing: an unknown key, a wrong type or a missing
referenced file is a `ProjectConfigError` naming the file and the key. The
tag-operation files' contents are checked when the anon side compiles the
rules (`orthanc_plugins.anon.deid.tag_rules`), with the same error type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from slugify import slugify

# Where referenced files live, relative to the directories the caller names.
MANUFACTURER_OVERRIDES_SUBDIR = "manufacturer-overrides"  # under the tag rules dir
IMAGE_OPERATIONS_SUBDIR = "image-operations"  # under the projects dir

BURNED_IN_ACTIONS = ("quarantine", "drop")
XNAT_OVERWRITE_MODES = ("none", "append", "delete")
XNAT_DESTINATIONS = ("/archive", "/prearchive")
_DESTINATION_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class ProjectConfigError(ValueError):
    """A project configuration (or a file it names) is invalid."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = Path(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: {key}: {problem}")


@dataclass(frozen=True)
class ManufacturerRule:
    """Instances whose Manufacturer matches `regex` (case-insensitive search) are allowed,
    except those of the listed series numbers."""

    regex: str
    exclude_series_numbers: tuple[int, ...] = ()


@dataclass(frozen=True)
class BurnedInTextPolicy:
    """What to do with instances that may show burned-in text (a PIXL-new section).

    `action` applies to an instance at risk that the project does not allow:
    "quarantine" keeps it aside with its reason for review, "drop" discards it.
    """

    action: str = "quarantine"
    allow_burned_in_annotation: bool = False
    allow_secondary_capture: bool = False
    allow_screen_save: bool = False
    # Modalities where text is often burned in (US, SC, XA, ...) that the project clears.
    allow_modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeidOptions:
    """De-identification choices a project makes (a PIXL-new section, `deid_options`).

    `times_of_day`: "remove" (the default: TM values emptied, DT values cut to their date)
    or "keep". `accept_opaque_private`: keep private values whose content cannot be checked
    (Siemens CSA headers, OB/UN private elements) when the rules list them; without it a
    project whose rules keep one is refused when it is loaded.
    """

    times_of_day: str = "remove"
    accept_opaque_private: bool = False


@dataclass(frozen=True)
class XnatOptions:
    overwrite: str = "none"
    destination: str = "/archive"


@dataclass(frozen=True)
class ProjectConfig:
    slug: str
    name: str
    source_path: Path
    modalities: tuple[str, ...]
    azure_kv_alias: str | None
    base_tag_files: tuple[Path, ...]
    manufacturer_override_files: tuple[Path, ...]
    allowed_manufacturers: tuple[ManufacturerRule, ...]
    min_instances_per_series: int
    series_filters: tuple[str, ...]
    dicom_destination: str
    parquet_destination: str
    deid_recipe_files: tuple[Path, ...]
    burned_in_text: BurnedInTextPolicy
    record_id_map: bool
    xnat_options: XnatOptions | None
    deid_options: DeidOptions = DeidOptions()

    @property
    def secret_alias(self) -> str:
        """Name of the project's secrets in the secret store (PIXL: azure_kv_alias or slug)."""
        return self.azure_kv_alias or self.slug


# --- small typed readers: each names the file and the dotted key on error -------------------


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ProjectConfigError:
        return ProjectConfigError(self.path, key, problem)

    def mapping(
        self, value: Any, key: str, required: set[str], optional: set[str]
    ) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        where = f"{key}." if key else ""
        for name in value:
            if name not in required | optional:
                allowed = ", ".join(sorted(required | optional))
                raise self.fail(f"{where}{name}", f"unknown key (allowed here: {allowed})")
        for name in sorted(required):
            if name not in value:
                raise self.fail(f"{where}{name}", "missing required key")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def optional_string(self, value: Any, key: str) -> str | None:
        return None if value is None else self.string(value, key)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, value: Any, key: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def items(self, value: Any, key: str, read: Callable[[Any, str], Any], *, allow_null: bool):
        """A list read item by item; null is an empty list where PIXL allows it."""
        if value is None and allow_null:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type(value).__name__}")
        return tuple(read(item, f"{key}[{index}]") for index, item in enumerate(value))

    def existing_file(self, folder: Path, value: Any, key: str) -> Path:
        name = self.string(value, key)
        path = folder / name
        if not path.is_file():
            raise self.fail(key, f"file {name!r} not found in {folder}")
        return path


# --- loading ----------------------------------------------------------------------------------


def read_yaml_file(path: Path) -> Any:
    """The document of a configuration YAML file (a project file or a tag-operation file);
    a file that cannot be read or parsed is a `ProjectConfigError` naming it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProjectConfigError(path, "(file)", f"cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ProjectConfigError(path, "(file)", f"is not valid YAML: {exc}") from exc


_TOP_REQUIRED = {
    "project", "tag_operation_files", "allowed_manufacturers",
    "min_instances_per_series", "destination",
}
_TOP_OPTIONAL = {
    "series_filters", "image_operation_files", "xnat_destination_options",
    "burned_in_text", "record_id_map", "deid_options",
}


def load_project(path: Path, projects_dir: Path, tag_rules_dir: Path) -> ProjectConfig:
    """Read and validate one project file; referenced files must exist."""
    reader = _Reader(path)
    top = reader.mapping(read_yaml_file(path), "", _TOP_REQUIRED, _TOP_OPTIONAL)

    project = reader.mapping(top["project"], "project", {"name", "modalities"}, {"azure_kv_alias"})
    name = reader.string(project["name"], "project.name")
    modalities = reader.items(
        project["modalities"], "project.modalities",
        lambda v, k: reader.string(v, k).upper(), allow_null=False,
    )
    if not modalities:
        raise reader.fail("project.modalities", "must list at least one modality")

    tag_files = reader.mapping(
        top["tag_operation_files"], "tag_operation_files", {"base"}, {"manufacturer_overrides"}
    )
    base_files = reader.items(
        tag_files["base"], "tag_operation_files.base",
        lambda v, k: reader.existing_file(tag_rules_dir, v, k), allow_null=False,
    )
    if not base_files:
        raise reader.fail("tag_operation_files.base", "must list at least one file")
    override_dir = tag_rules_dir / MANUFACTURER_OVERRIDES_SUBDIR
    override_files = reader.items(
        tag_files.get("manufacturer_overrides"), "tag_operation_files.manufacturer_overrides",
        lambda v, k: reader.existing_file(override_dir, v, k), allow_null=True,
    )

    destination = reader.mapping(top["destination"], "destination", {"dicom", "parquet"}, set())
    return ProjectConfig(
        slug=_slug_of(reader, name),
        name=name,
        source_path=path,
        modalities=modalities,
        azure_kv_alias=reader.optional_string(project.get("azure_kv_alias"), "project.azure_kv_alias"),
        base_tag_files=base_files,
        manufacturer_override_files=override_files,
        allowed_manufacturers=reader.items(
            top["allowed_manufacturers"], "allowed_manufacturers",
            lambda v, k: _manufacturer_rule(reader, v, k), allow_null=False,
        ),
        min_instances_per_series=reader.integer(
            top["min_instances_per_series"], "min_instances_per_series", minimum=1
        ),
        series_filters=reader.items(
            top.get("series_filters"), "series_filters",
            lambda v, k: reader.string(v, k).lower(), allow_null=True,
        ),
        dicom_destination=_destination(reader, destination["dicom"], "destination.dicom"),
        parquet_destination=_destination(reader, destination["parquet"], "destination.parquet"),
        deid_recipe_files=_recipe_files(reader, top.get("image_operation_files"), projects_dir),
        burned_in_text=_burned_in_policy(reader, top.get("burned_in_text")),
        record_id_map=reader.boolean(top.get("record_id_map", False), "record_id_map"),
        xnat_options=_xnat_options(reader, top.get("xnat_destination_options")),
        deid_options=_deid_options(reader, top.get("deid_options")),
    )


def project_path(slug: str, projects_dir: Path) -> Path:
    return Path(projects_dir) / f"{slug}.yaml"


def load_project_by_slug(slug: str, projects_dir: Path, tag_rules_dir: Path) -> ProjectConfig:
    path = project_path(slug, projects_dir)
    if not path.is_file():
        raise ProjectConfigError(path, "(file)", f"no configuration for project {slug!r}")
    config = load_project(path, Path(projects_dir), Path(tag_rules_dir))
    if config.slug != slug:
        raise ProjectConfigError(
            path, "project.name", f"slugifies to {config.slug!r}, not the file's slug {slug!r}"
        )
    return config


def load_all_projects(projects_dir: Path, tag_rules_dir: Path) -> dict[str, ProjectConfig]:
    """Every `*.yaml` project in the folder, by slug; any invalid file fails the whole load."""
    projects: dict[str, ProjectConfig] = {}
    for path in sorted(Path(projects_dir).glob("*.yaml")):
        config = load_project(path, Path(projects_dir), Path(tag_rules_dir))
        if config.slug in projects:
            other = projects[config.slug].source_path.name
            raise ProjectConfigError(path, "project.name", f"slug {config.slug!r} also used by {other}")
        projects[config.slug] = config
    return projects


def _slug_of(reader: _Reader, name: str) -> str:
    slug = slugify(name)
    if not slug:
        raise reader.fail("project.name", f"has no usable characters for a slug: {name!r}")
    return slug


def _manufacturer_rule(reader: _Reader, value: Any, key: str) -> ManufacturerRule:
    entry = reader.mapping(value, key, {"regex"}, {"exclude_series_numbers"})
    regex = reader.string(entry["regex"], f"{key}.regex")
    try:
        re.compile(regex)
    except re.error as exc:
        raise reader.fail(f"{key}.regex", f"is not a valid regular expression: {exc}") from exc
    excluded = reader.items(
        entry.get("exclude_series_numbers"), f"{key}.exclude_series_numbers",
        lambda v, k: reader.integer(v, k, minimum=0), allow_null=True,
    )
    return ManufacturerRule(regex=regex, exclude_series_numbers=excluded)


def _destination(reader: _Reader, value: Any, key: str) -> str:
    # Destinations are plugins (pixl_hooks); which exist is checked where they are dispatched.
    name = reader.string(value, key)
    if not _DESTINATION_NAME.match(name):
        raise reader.fail(key, f"must be a destination name like 'ftps' or 'none', got {name!r}")
    return name


def _recipe_files(reader: _Reader, value: Any, projects_dir: Path) -> tuple[Path, ...]:
    if value is None:
        return ()
    section = reader.mapping(value, "image_operation_files", set(), {"deid_recipes"})
    folder = projects_dir / IMAGE_OPERATIONS_SUBDIR
    return reader.items(
        section.get("deid_recipes"), "image_operation_files.deid_recipes",
        lambda v, k: reader.existing_file(folder, v, k), allow_null=True,
    )


def _burned_in_policy(reader: _Reader, value: Any) -> BurnedInTextPolicy:
    if value is None:
        return BurnedInTextPolicy()
    flags = {"allow_burned_in_annotation", "allow_secondary_capture", "allow_screen_save"}
    section = reader.mapping(value, "burned_in_text", set(), {"action", "allow_modalities"} | flags)
    return BurnedInTextPolicy(
        action=reader.choice(section.get("action", "quarantine"), "burned_in_text.action",
                             BURNED_IN_ACTIONS),
        allow_modalities=reader.items(
            section.get("allow_modalities"), "burned_in_text.allow_modalities",
            lambda v, k: reader.string(v, k).upper(), allow_null=True,
        ),
        **{flag: reader.boolean(section.get(flag, False), f"burned_in_text.{flag}")
           for flag in sorted(flags)},
    )


def _deid_options(reader: _Reader, value: Any) -> DeidOptions:
    if value is None:
        return DeidOptions()
    section = reader.mapping(value, "deid_options", set(), {"times_of_day", "accept_opaque_private"})
    return DeidOptions(
        times_of_day=reader.choice(section.get("times_of_day", "remove"),
                                   "deid_options.times_of_day", ("remove", "keep")),
        accept_opaque_private=reader.boolean(section.get("accept_opaque_private", False),
                                             "deid_options.accept_opaque_private"),
    )


def _xnat_options(reader: _Reader, value: Any) -> XnatOptions | None:
    if value is None:
        return None
    key = "xnat_destination_options"
    section = reader.mapping(value, key, set(), {"overwrite", "destination"})
    return XnatOptions(
        overwrite=reader.choice(section.get("overwrite", "none"), f"{key}.overwrite",
                                XNAT_OVERWRITE_MODES),
        destination=reader.choice(section.get("destination", "/archive"), f"{key}.destination",
                                  XNAT_DESTINATIONS),
    )
