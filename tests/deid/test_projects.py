"""Project configuration: PIXL's files load (where present), ours load, broken ones fail
precisely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orthanc_plugins.anon.deid.engine import compile_project, load_compiled_project
from orthanc_plugins.common.projects import (
    ProjectConfigError,
    load_all_projects,
    load_project_by_slug,
)

from .helpers import PROJECTS_DIR, TAG_RULES_DIR


def test_every_pixl_fixture_project_loads_and_compiles(pixl_fixtures: Path) -> None:
    configs = pixl_fixtures / "project-configs"
    projects = load_all_projects(configs, configs / "tag-operations")
    assert len(projects) == len(list(configs.glob("*.yaml"))) >= 17
    for project in projects.values():
        compiled = compile_project(project)
        assert compiled.tag_rules.base, project.slug
    external = projects["test-external-user"]
    assert external.modalities == ("MR",)
    assert [r.regex for r in external.allowed_manufacturers] == ["^siemens", "^company"]
    assert external.dicom_destination == "none"
    hearing = projects["uclh-hic-hearing-health"]
    assert hearing.min_instances_per_series == 6
    assert hearing.allowed_manufacturers[0].exclude_series_numbers[:2] == (1200, 1201)
    assert "lungscreening result" in hearing.series_filters
    omop = projects["test-extract-uclh-omop-cdm"]
    assert omop.azure_kv_alias == "test" and omop.secret_alias == "test"
    assert (omop.dicom_destination, omop.parquet_destination) == ("ftps", "ftps")
    assert [p.name for p in omop.manufacturer_override_files] == ["mri.yaml", "mri-diffusion.yaml"]
    xnat = projects["test-extract-uclh-omop-cdm-xnat"]
    assert xnat.xnat_options is not None and xnat.xnat_options.destination == "/archive"
    ultrasound = compile_project(projects["ultrasound-learning-for-timely-rapid-assessment-of-cts"])
    assert ultrasound.image_operations.mask_ultrasound_regions


def test_every_test_project_loads_and_compiles(generated_inputs: Path) -> None:
    """The suite's own counterpart of PIXL's sample projects (tests/pixl_inputs.py)."""
    configs = generated_inputs / "project-configs"
    projects = load_all_projects(configs, configs / "tag-operations")
    assert set(projects) == {path.stem for path in configs.glob("*.yaml")}
    for project in projects.values():
        assert compile_project(project).tag_rules.base, project.slug
    omop = projects["test-extract-uclh-omop-cdm"]
    assert omop.secret_alias == "test"
    assert (omop.dicom_destination, omop.parquet_destination) == ("ftps", "ftps")
    assert [p.name for p in omop.manufacturer_override_files] == ["mr.yaml"]
    assert omop.allowed_manufacturers[1].exclude_series_numbers == (123456789,)
    xnat = projects["test-extract-uclh-omop-cdm-xnat"]
    assert xnat.xnat_options is not None and xnat.xnat_options.destination == "/archive"
    assert [p.name for p in projects["ms-pinpoint"].base_tag_files][-1] == "ms-pinpoint.yaml"
    assert projects["despiad"].min_instances_per_series == 2


def test_every_pixl_tag_operation_file_compiles(pixl_fixtures: Path) -> None:
    from orthanc_plugins.anon.deid.tag_rules import load_base_file, load_override_file

    folder = pixl_fixtures / "project-configs" / "tag-operations"
    for path in folder.glob("*.yaml"):
        assert load_base_file(path), path.name
    for path in (folder / "manufacturer-overrides").glob("*.yaml"):
        assert load_override_file(path), path.name


def test_our_demo_project_and_defaults_load() -> None:
    for project in load_all_projects(PROJECTS_DIR, TAG_RULES_DIR).values():
        compile_project(project)  # every project shipped in the repository
    demo = load_project_by_slug("demo", PROJECTS_DIR, TAG_RULES_DIR)
    assert demo.slug == "demo"
    assert set(demo.modalities) >= {"CT", "MR", "CR", "DX", "US"}
    assert (demo.dicom_destination, demo.parquet_destination) == ("ftps", "ftps")
    assert demo.record_id_map is True
    compiled = load_compiled_project("demo", PROJECTS_DIR, TAG_RULES_DIR)
    assert compiled.image_operations.mask_ultrasound_regions
    assert {p.name for p in demo.base_tag_files} >= {"base.yaml", "ct.yaml", "mr.yaml",
                                                      "xray.yaml", "us.yaml"}


@pytest.fixture
def pixl_copy(tmp_path: Path, generated_inputs: Path) -> Path:
    """A writable copy of the test projects' configs (in PIXL's layout), to break one thing
    at a time."""
    target = tmp_path / "configs"
    shutil.copytree(generated_inputs / "project-configs", target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def _load(folder: Path, slug: str = "ms-pinpoint"):
    return load_compiled_project(slug, folder, folder / "tag-operations")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('modalities: ["MR"]', 'modalities: ["MR"]\n    colour: "blue"', "project.colour", "unknown key"),
        ("min_instances_per_series: 1", "min_instances_per_series: 1\nextra_filters: []",
         "extra_filters", "unknown key"),
        ("min_instances_per_series: 1", 'min_instances_per_series: "one"',
         "min_instances_per_series", "must be an integer"),
        ('modalities: ["MR"]', 'modalities: "MR"', "project.modalities", "must be a list"),
        ('- "ms-pinpoint.yaml"', '- "no-such-rules.yaml"', "tag_operation_files.base[2]",
         "'no-such-rules.yaml' not found"),
        ('manufacturer_overrides: ["mr.yaml"]', 'manufacturer_overrides: ["nope.yaml"]',
         "tag_operation_files.manufacturer_overrides[0]", "'nope.yaml' not found"),
        ('dicom: "dicomweb"', "dicom: 7", "destination.dicom", "non-empty string"),
        ('- regex: ".*"', '- regex: "(unclosed"', "allowed_manufacturers[0].regex", "regular expression"),
        ('    dicom: "dicomweb"\n', "", "destination.dicom", "missing required key"),
    ],
)
def test_a_broken_project_file_fails_naming_file_and_key(pixl_copy, old, new, key, problem) -> None:
    path = pixl_copy / "ms-pinpoint.yaml"
    _edit(path, old, new)
    with pytest.raises(ProjectConfigError) as error:
        _load(pixl_copy)
    assert error.value.path == path
    assert error.value.key == key
    assert problem in error.value.problem
    assert str(error.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("op: keep}", "op: blur}", "[0].op", "unknown operation 'blur'"),
        ("element: 0x0005", "element: 0x10005", "[0].element", "0x0000 to 0xFFFF"),
        ("op: keep}", "op: keep, colour: red}", "[0].colour", "unknown key"),
        ("op: keep}", "op: date-shift}", "[0].op", "does not apply to (0008,0005)"),
    ],
)
def test_a_broken_tag_operation_file_fails_naming_file_and_entry(pixl_copy, old, new, key, problem) -> None:
    path = pixl_copy / "tag-operations" / "base.yaml"
    _edit(path, old, new)
    with pytest.raises(ProjectConfigError) as error:
        _load(pixl_copy)
    assert (error.value.path, error.value.key) == (path, key)
    assert problem in error.value.problem


def test_a_broken_manufacturer_override_fails_naming_the_block(pixl_copy) -> None:
    path = pixl_copy / "tag-operations" / "manufacturer-overrides" / "mr.yaml"
    _edit(path, "- manufacturer: ^philips", "- maker: ^philips")
    with pytest.raises(ProjectConfigError) as error:
        _load(pixl_copy)
    assert (error.value.path, error.value.key) == (path, "[0]")


def test_a_recipe_with_an_unsupported_directive_fails(pixl_copy) -> None:
    path = pixl_copy / "image-operations" / "us-deid.recipe"
    _edit(path, "coordinates all", "blur all")
    with pytest.raises(ProjectConfigError) as error:
        _load(pixl_copy, "demo")  # the project with an ultrasound recipe
    assert error.value.path == path and error.value.key.startswith("line ")


def test_a_file_whose_name_does_not_match_its_slug_is_refused(pixl_copy) -> None:
    shutil.copy(pixl_copy / "ms-pinpoint.yaml", pixl_copy / "other.yaml")
    with pytest.raises(ProjectConfigError) as error:
        _load(pixl_copy, "other")
    assert error.value.key == "project.name"
