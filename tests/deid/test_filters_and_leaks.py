"""Filters (modality, manufacturer, series description, burned-in text, ultrasound masking),
the study-level minimum, and the PHI leak guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orthanc_plugins.anon.deid.engine import (
    DROPPED,
    KEPT,
    QUARANTINED,
    deidentify_instance,
    load_compiled_project,
)
from orthanc_plugins.anon.deid.filters import series_below_minimum
from pixl_stack.studygen import StudySpec, generate_study, make_patient

from .helpers import KEY, PROJECTS_DIR, TAG_RULES_DIR

PATIENT = make_patient(21)


def _one(modality: str = "CT", **spec):
    return generate_study(StudySpec(modality=modality, series=1, instances_per_series=1, **spec),
                          PATIENT)[0]


def _fixture_project(inputs: Path, slug: str):
    configs = inputs / "project-configs"
    return load_compiled_project(slug, configs, configs / "tag-operations")


def test_modality_not_in_the_project_is_dropped(pixl_format_inputs) -> None:
    project = _fixture_project(pixl_format_inputs, "ms-pinpoint")  # MR only
    result = deidentify_instance(_one("CT"), project, KEY)
    assert (result.status, result.dataset) == (DROPPED, None)
    assert "modality CT" in result.reason


def test_manufacturer_allow_list_and_excluded_series_numbers(pixl_format_inputs) -> None:
    project = _fixture_project(pixl_format_inputs, "test-extract-uclh-omop-cdm")  # ^company excludes 123456789
    assert deidentify_instance(_one("DX", manufacturer="Acme"), project, KEY).status == DROPPED
    allowed = _one("DX", manufacturer="Carestream Health")
    allowed.StudyDescription = "DX CHEST"  # PIXL's rules keep it; the generated one names the patient
    allowed = deidentify_instance(allowed, project, KEY)
    assert allowed.status == KEPT, allowed.reason
    excluded = _one("DX", manufacturer="company")
    excluded.SeriesNumber = 123456789
    result = deidentify_instance(excluded, project, KEY)
    assert result.status == DROPPED and "123456789" in result.reason


def test_series_description_filters(demo) -> None:
    result = deidentify_instance(_one("CT", series_descriptions=["Scout AP"]), demo, KEY)
    assert result.status == DROPPED and "'scout'" in result.reason
    assert "Scout AP" not in result.reason


def test_burned_in_annotation_and_secondary_capture_are_quarantined(demo) -> None:
    burned = deidentify_instance(_one("CT", burned_in=True), demo, KEY)
    assert burned.status == QUARANTINED and "burned in annotation" in burned.reason
    study = generate_study(StudySpec(series=1, instances_per_series=1, secondary_capture=True), PATIENT)
    capture = deidentify_instance(study[-1], demo, KEY)
    assert capture.status == QUARANTINED and capture.dataset is None


def test_burned_in_policy_can_drop_or_allow(tmp_path) -> None:
    text = (PROJECTS_DIR / "demo.yaml").read_text()
    for slug, policy, expected in (
        ("drop-them", 'burned_in_text:\n    action: "drop"', DROPPED),
        ("allow-them", "burned_in_text:\n    allow_burned_in_annotation: true", KEPT),
    ):
        (tmp_path / f"{slug}.yaml").write_text(
            text.replace('name: "demo"', f'name: "{slug}"')
            .replace('burned_in_text:\n    action: "quarantine"', policy)
            .replace('deid_recipes:\n        - "us-deid.recipe"', "deid_recipes: []"))
        project = load_compiled_project(slug, tmp_path, TAG_RULES_DIR)
        assert deidentify_instance(_one("CT", burned_in=True), project, KEY).status == expected


def test_ultrasound_pixels_outside_the_regions_are_masked(demo) -> None:
    source = _one("US", burned_in=True)  # a bright text band above the region
    region_top = int(source.SequenceOfUltrasoundRegions[0].RegionLocationMinY0)
    before = source.pixel_array.copy()
    assert before[:region_top].any()
    result = deidentify_instance(source, demo, KEY)
    assert result.status == KEPT, result.reason
    after = result.dataset.pixel_array
    assert not after[:region_top].any()
    assert np.array_equal(after[region_top:], before[region_top:])
    assert "113101" in result.option_codes


def test_ultrasound_without_regions_but_burned_in_is_quarantined(demo) -> None:
    source = _one("US", burned_in=True)
    del source.SequenceOfUltrasoundRegions
    assert deidentify_instance(source, demo, KEY).status == QUARANTINED


def test_min_instances_per_series_is_a_pure_study_level_rule() -> None:
    counts = {"series-a": 1, "series-b": 6, "series-c": 5}
    assert series_below_minimum(counts, 6) == {"series-a", "series-c"}
    assert series_below_minimum(counts, 1) == set()


@pytest.mark.parametrize(
    ("plant", "where"),
    [
        (lambda ds, p: setattr(ds, "SeriesDescription", f"CT for {p.name.split('^')[0]}"),
         "(0008,103E) SeriesDescription"),
        (lambda ds, p: setattr(ds.ReferencedImageSequence[0], "ReferencedFrameNumber", None)
         or setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", p.mrn]), "(0008,0008) ImageType"),
        (lambda ds, p: ds.private_block(0x2001, "Philips Imaging DD 001").add_new(
            0x23, "LO", f"x {p.telephone[0]} y"), "(2001,1023) private"),
    ],
)
def test_leak_guard_quarantines_and_names_the_tag_not_the_value(demo, plant, where) -> None:
    source = generate_study(StudySpec(modality="MR", series=1, instances_per_series=2), PATIENT)[1]
    plant(source, PATIENT)
    result = deidentify_instance(source, demo, KEY)
    assert result.status == QUARANTINED
    assert where in result.reason
    for value in (PATIENT.mrn, PATIENT.name, *PATIENT.name_parts, *PATIENT.telephone):
        assert value not in result.reason


def test_leak_guard_looks_inside_kept_sequences(demo) -> None:
    source = generate_study(StudySpec(series=1, instances_per_series=2), PATIENT)[1]
    source.ReferencedImageSequence[0].ReferencedSOPClassUID = "1.2.3"  # no class UID: remapped
    source.ReferencedImageSequence[0].ReferencedFrameNumber = PATIENT.birth_date
    result = deidentify_instance(source, demo, KEY)
    assert result.status == QUARANTINED
    assert "PatientBirthDate" in result.reason and "ReferencedImageSequence[0]" in result.reason
