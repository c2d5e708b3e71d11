"""Value vocabularies (`keep-vocabulary`) on generated studies: a description is kept only
when the project allows it, strict validation of the rules and the vocabulary files, and
the count in pixl-deid's report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orthanc_plugins.anon.deid.cli import main
from orthanc_plugins.anon.deid.engine import KEPT, deidentify_instance, load_compiled_project
from orthanc_plugins.common.projects import ProjectConfigError
from pixl_stack.studygen import StudySpec, generate_study, make_patient, write_study

from .helpers import KEY, TAG_RULES_DIR, write_project

# After our base and CT rules: these entries replace theirs for the same tags.
VOCABULARY_RULES = """
- {name: Study Description, group: 0x0008, element: 0x1030, op: keep-vocabulary,
   vocabulary: descriptions.yaml}
- {name: Series Description, group: 0x0008, element: 0x103E, op: keep-vocabulary,
   vocabulary: series.yaml, match: case-insensitive}
- {name: Body Part Examined, group: 0x0018, element: 0x0015, op: keep-vocabulary,
   vocabulary: body-parts.yaml}
- {name: Image Type, group: 0x0008, element: 0x0008, op: keep-vocabulary,
   vocabulary: image-types.yaml}
"""
VOCABULARIES = {
    "descriptions.yaml": '["CT CHEST", "CT HEAD"]\n',
    "series.yaml": '["Axial 5mm", "Coronal"]\n',
    "body-parts.yaml": '["HEAD"]\n',
    "image-types.yaml": '["ORIGINAL", "PRIMARY"]\n',
}


def _rules_folder(tmp_path: Path, rules: str = VOCABULARY_RULES,
                  vocabularies: dict[str, str] = VOCABULARIES) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for name in ("base.yaml", "ct.yaml"):
        shutil.copy(TAG_RULES_DIR / name, folder / name)
    (folder / "vocabularies.yaml").write_text(rules)
    for name, text in vocabularies.items():
        (folder / name).write_text(text)
    return folder


def _project(tmp_path: Path, rules_folder: Path):
    write_project(tmp_path / "projects", "vocab", """  modalities: ["CT"]
tag_operation_files:
  base: ["base.yaml", "ct.yaml", "vocabularies.yaml"]
allowed_manufacturers:
  - regex: ".*"
min_instances_per_series: 1
destination: {dicom: "none", parquet: "none"}
""")
    return load_compiled_project("vocab", tmp_path / "projects", rules_folder)


@pytest.fixture
def project(tmp_path):
    return _project(tmp_path, _rules_folder(tmp_path))


def _ct(seed: int = 41, **spec):
    spec = {"series": 1, "instances_per_series": 1, "seed": seed,
            "series_descriptions": ["AXIAL 5MM"], **spec}
    return generate_study(StudySpec(**spec), make_patient(seed))[0]


def test_a_description_with_the_patients_name_is_removed_and_the_instance_kept(project):
    ds = _ct()
    assert ds.StudyDescription.startswith("CT CHEST - ")  # the generator adds the patient's name
    audit: list[tuple[int, str, str]] = []

    result = deidentify_instance(ds, project, KEY, audit=lambda path, tag, action, why:
                                 audit.append((int(tag), action, why)))

    assert result.status == KEPT  # not quarantined: the name left with the description
    out = result.dataset
    assert "StudyDescription" not in out
    assert out.SeriesDescription == "AXIAL 5MM"  # case-insensitive match, kept as it was
    assert "BodyPartExamined" not in out  # CHEST is not in body-parts.yaml
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY"]  # AXIAL removed, the rest kept
    removed = [(tag, why) for tag, action, why in audit if action == "removed: not in the vocabulary"]
    assert sorted(removed) == [
        (0x00080008, "keep-vocabulary image-types.yaml (vocabularies.yaml)"),
        (0x00081030, "keep-vocabulary descriptions.yaml (vocabularies.yaml)"),
        (0x00180015, "keep-vocabulary body-parts.yaml (vocabularies.yaml)"),
    ]


def test_an_allowed_value_is_kept_exactly_and_exact_match_is_case_sensitive(project):
    allowed, other_case = _ct(seed=42), _ct(seed=43)
    allowed.StudyDescription = "CT HEAD "  # DICOM's padding is not part of the value
    other_case.StudyDescription = "ct head"

    assert deidentify_instance(allowed, project, KEY).dataset.StudyDescription == "CT HEAD "
    assert "StudyDescription" not in deidentify_instance(other_case, project, KEY).dataset


def test_the_same_rules_work_on_files_as_orthanc_anon_sees_them(project, tmp_path):
    ds = _ct(seed=44)
    ds.StudyDescription = "CT CHEST"
    path = write_study([ds], tmp_path / "study")[0]

    result = deidentify_instance(path.read_bytes(), project, KEY)

    assert result.status == KEPT
    assert b"CT CHEST" in result.data and b"AXIAL 5MM" in result.data


@pytest.mark.parametrize(("rule", "key", "problem"), [
    ("{group: 0x0008, element: 0x1030, op: keep-vocabulary, vocabulary: missing.yaml}",
     "[0].vocabulary", "vocabulary file 'missing.yaml' not found in "),
    ("{group: 0x0008, element: 0x1030, op: keep-vocabulary}",
     "[0].vocabulary", "op 'keep-vocabulary' needs the name of a vocabulary file"),
    ("{group: 0x0008, element: 0x1030, op: keep-vocabulary, vocabulary: ../descriptions.yaml}",
     "[0].vocabulary", "must be a file name beside vocabularies.yaml"),
    ("{group: 0x0008, element: 0x1030, op: keep-vocabulary, vocabulary: descriptions.yaml, match: fuzzy}",
     "[0].match", "must be one of exact, case-insensitive, got 'fuzzy'"),
    ("{group: 0x0008, element: 0x1030, op: keep, vocabulary: descriptions.yaml}",
     "[0].vocabulary", "only for op 'keep-vocabulary'"),
    ("{group: 0x0028, element: 0x0010, op: keep-vocabulary, vocabulary: descriptions.yaml}",
     "[0].op", "'keep-vocabulary' does not apply to (0028,0010) (VR US;"),
])
def test_a_bad_rule_is_one_error_naming_the_file_and_key(tmp_path, rule, key, problem):
    folder = _rules_folder(tmp_path, rules=f"- {rule}\n")

    with pytest.raises(ProjectConfigError) as raised:
        _project(tmp_path, folder)

    assert raised.value.path == folder / "vocabularies.yaml"
    assert raised.value.key == key
    assert problem in raised.value.problem


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("[]\n", "(file)", "must be a non-empty YAML list of allowed values"),
    ("{CT: yes}\n", "(file)", "must be a non-empty YAML list of allowed values"),
    ('["CT CHEST", 12]\n', "[1]", "must be a non-empty string"),
    ('["CT CHEST", "  "]\n', "[1]", "must be a non-empty string"),
    ('["CT CHEST"\n', "(file)", "is not valid YAML"),
])
def test_a_bad_vocabulary_file_is_one_error_naming_it(tmp_path, text, key, problem):
    folder = _rules_folder(tmp_path, vocabularies={**VOCABULARIES, "descriptions.yaml": text})

    with pytest.raises(ProjectConfigError) as raised:
        _project(tmp_path, folder)

    assert (raised.value.path, raised.value.key) == (folder / "descriptions.yaml", key)
    assert problem in raised.value.problem


def test_pixl_deid_reports_how_many_values_a_vocabulary_removed(tmp_path, capsys):
    rules = _rules_folder(tmp_path)
    _project(tmp_path, rules)
    inputs = tmp_path / "in"
    # 2 + 1 instances: each loses its study description (it names the patient), its body
    # part (CHEST) and AXIAL from its image type; the second study's series is not allowed.
    write_study(generate_study(StudySpec(series=1, instances_per_series=2, seed=45,
                                         series_descriptions=["Axial 5mm"]),
                               make_patient(45)), inputs / "a")
    write_study(generate_study(StudySpec(series=1, instances_per_series=1, seed=46,
                                         series_descriptions=["Sagittal MPR"]),
                               make_patient(46)), inputs / "b")
    key_file = tmp_path / "key"
    key_file.write_text(KEY.decode())
    out = tmp_path / "out"

    assert main(["--project", "vocab", "--projects-dir", str(tmp_path / "projects"),
                 "--tag-rules-dir", str(rules), "--key-file", str(key_file),
                 "--output", str(out), str(inputs)]) == 0

    assert "kept=3" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["values_removed_by_vocabulary"] == 3 * 3 + 1
    markdown = (out / "report.md").read_text()
    assert "- values removed by a vocabulary (`keep-vocabulary`): 10" in markdown
    assert ("| (0008,1030) StudyDescription | removed: not in the vocabulary | "
            "keep-vocabulary descriptions.yaml (vocabularies.yaml) | 3 |") in markdown
