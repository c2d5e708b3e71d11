"""Inputs in the formats of the existing PIXL system, written by the suite itself.

`write_pixl_inputs(root)` lays out the same tree as PIXL's sample folder
(`PIXL_COMPAT_FIXTURES`, see tests/conftest.py), so that a test can read either
one and check the same facts:

    omop/                                  a flat OMOP ES extract
    omop-resources/omop-batched/           a batched one (dataset folders of part files)
    omop-resources/*.csv                   CSV cohorts: plain, duplicated rows, blanks and NA
    series-level-querying/all-series.csv   a series-level request
    project-configs/*.yaml                 test projects, plus copies of the repository's
    project-configs/tag-operations/        the repository's tag_rules/ plus one project's own file
    project-configs/image-operations/      the repository's recipes

Its content is made up: identifiers, dates and UIDs of nobody. The test projects
keep the slugs of PIXL's sample projects (the slug of an extract is its
`cdm_source_name`), with the repository's own tag rules.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parents[1]  # imports no PIXL module: conftest runs it first
CDM_SOURCE_NAME = "Test Extract - UCLH OMOP CDM"  # slug test-extract-uclh-omop-cdm
GENERATED_AT = "2023-12-07 14:08:58"
MRN = "987654321"  # the person of every imaging study of the flat extract
STUDY_UID = "1.3.6.1.4.1.14519.5.2.1.99.1071.12985477682660597455732044031486"
SERIES_UIDS = ("1.3.46.670589.11.38023.5.0.7404.2023012517551890000",
               "1.3.46.670589.11.38023.5.0.7404.2023012517551890001")

_CSV_HEADER = ("procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,"
               "study_date,study_uid,participant_id")
_SERIES_HEADER = ("procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,"
                  "study_date,study_uid,series_uid,participant_id")

_FILTERS = """series_filters:
    - "localizer"
    - "localiser"
    - "scout"
    - "positioning"
"""

# The test projects: slug -> YAML. `azure_kv_alias: "test"` names their secrets.
TEST_PROJECTS = {
    "test-extract-uclh-omop-cdm": """project:
    name: "test-extract-uclh-omop-cdm"
    azure_kv_alias: "test"
    modalities: ["DX", "CR"]
tag_operation_files:
    base:
        - "base.yaml"
        - "mr.yaml"
        - "xray.yaml"
    manufacturer_overrides: ["mr.yaml"]
allowed_manufacturers:
  - regex: "^carestream"
    exclude_series_numbers: []
  - regex: "^company"
    exclude_series_numbers:
      - 123456789
  - regex: "^philips"
    exclude_series_numbers: []
min_instances_per_series: 1
""" + _FILTERS + """destination:
    dicom: "ftps"
    parquet: "ftps"
""",
    "test-extract-uclh-omop-cdm-dicomweb": """project:
    name: "test-extract-uclh-omop-cdm-dicomweb"
    azure_kv_alias: "test"
    modalities: ["DX", "CR", "MR"]
tag_operation_files:
    base:
        - "base.yaml"
        - "mr.yaml"
        - "xray.yaml"
    manufacturer_overrides: ["mr.yaml"]
min_instances_per_series: 1
allowed_manufacturers:
  - regex: "^company"
    exclude_series_numbers: []
""" + _FILTERS + """destination:
    dicom: "dicomweb"
    parquet: "none"
""",
    "test-extract-uclh-omop-cdm-xnat": """project:
    name: "test-extract-uclh-omop-cdm-xnat"
    azure_kv_alias: "test"
    modalities: ["DX", "CR", "MR"]
tag_operation_files:
    base:
        - "base.yaml"
        - "mr.yaml"
        - "xray.yaml"
    manufacturer_overrides: ["mr.yaml"]
allowed_manufacturers:
  - regex: "^company"
    exclude_series_numbers: []
min_instances_per_series: 1
""" + _FILTERS + """destination:
    dicom: "xnat"
    parquet: "none"
xnat_destination_options:
    overwrite: "none"
    destination: "/archive"
""",
    # MR only, with a tag-operation file of its own (tag-operations/ms-pinpoint.yaml).
    "ms-pinpoint": """project:
    name: "ms-pinpoint"
    modalities: ["MR"]
tag_operation_files:
    base:
        - "base.yaml"
        - "mr.yaml"
        - "ms-pinpoint.yaml"
    manufacturer_overrides: ["mr.yaml"]
allowed_manufacturers:
  - regex: ".*"
    exclude_series_numbers: []
min_instances_per_series: 1
""" + _FILTERS + """destination:
    dicom: "dicomweb"
    parquet: "none"
""",
    # CT from one manufacturer, some series excluded, at least two instances per series.
    "despiad": """project:
    name: "despiad"
    modalities: ["CT"]
tag_operation_files:
    base:
        - "base.yaml"
        - "ct.yaml"
    manufacturer_overrides: []
allowed_manufacturers:
  - regex: "^ge medical systems"
    exclude_series_numbers:
        - 1200
        - 1201
min_instances_per_series: 2
""" + _FILTERS + """    - "mip"
destination:
    dicom: "xnat"
    parquet: "none"
""",
}

_PROJECT_OWN_RULES = {
    "ms-pinpoint.yaml": "# The project's own additions to the allow-list.\n"
                        "- {name: Contrast/Bolus Agent, group: 0x0018, element: 0x0010, op: keep}\n",
}


def write_pixl_inputs(root: Path) -> Path:
    """Write the whole tree under `root` (which must not exist) and return `root`."""
    root.mkdir(parents=True)
    _write_project_configs(root / "project-configs")
    _write_flat_omop(root / "omop")
    _write_batched_omop(root / "omop-resources" / "omop-batched")
    _write_csv_cohorts(root)
    return root


def _write_project_configs(configs: Path) -> None:
    shutil.copytree(REPO_ROOT / "tag_rules", configs / "tag-operations",
                    ignore=shutil.ignore_patterns("*.md"))
    for name, text in _PROJECT_OWN_RULES.items():
        (configs / "tag-operations" / name).write_text(text)
    shutil.copytree(REPO_ROOT / "projects" / "image-operations", configs / "image-operations")
    for path in (REPO_ROOT / "projects").glob("*.yaml"):
        shutil.copy(path, configs / path.name)
    for slug, text in TEST_PROJECTS.items():
        (configs / f"{slug}.yaml").write_text(text)


def _write_summary(folder: Path) -> None:
    (folder / "extract_summary.json").write_text(json.dumps(
        {"datetime": GENERATED_AT, "settings": {"cdm_source_name": CDM_SOURCE_NAME}}, indent=4))


def _procedure_table(ids, persons, dates, id_type) -> pa.Table:
    times = [datetime.datetime.combine(d, datetime.time(9), datetime.UTC) for d in dates]
    return pa.table({
        "procedure_occurrence_id": pa.array(ids, id_type),
        "person_id": pa.array(persons, id_type),
        "procedure_concept_id": pa.array([4200610] * len(ids), id_type),
        "procedure_date": pa.array(dates, pa.date32()),
        "procedure_datetime": pa.array(times, pa.timestamp("us", tz="UTC")),
        "procedure_type_concept_id": pa.array([32817] * len(ids), id_type),
    })


def _links_table(ids, accessions, study_uids, id_type) -> pa.Table:
    return pa.table({
        "procedure_occurrence_id": pa.array(ids, id_type),
        "AccessionNumber": pa.array(accessions, pa.string()),
        "StudyUid_X": pa.array(study_uids, pa.string()),
    })


def _people_table(persons, mrns, id_type) -> pa.Table:
    return pa.table({"person_id": pa.array(persons, id_type), "PrimaryMrn": pa.array(mrns, pa.string())})


def _write_flat_omop(folder: Path) -> None:
    """Six procedures of three people; only 4 and 5 (both of person 2) are imaging studies."""
    (folder / "public" / "omop").mkdir(parents=True)
    (folder / "private").mkdir()
    _write_summary(folder)
    day = datetime.date
    pq.write_table(_procedure_table(
        [1, 2, 3, 4, 5, 6], [1, 1, 2, 2, 2, 3],
        [day(2021, 7, 1), day(2021, 7, 1), day(2020, 5, 1), day(2020, 5, 23), day(2020, 5, 23),
         day(2015, 5, 1)], pa.int32()),
        folder / "public" / "omop" / "PROCEDURE_OCCURRENCE.parquet")
    pq.write_table(_people_table([1, 2, 3], ["12345678", MRN, "5020765"], pa.int32()),
                   folder / "private" / "PERSON_LINKS.parquet")
    pq.write_table(_links_table(
        [1, 2, 3, 4, 5, 6], [None, None, None, "AA12345601", "AA12345605", None],
        [None, None, None, STUDY_UID, "1.2.826.0.1.3680043.8.498.10000000000000000000000000005", None],
        pa.int32()), folder / "private" / "PROCEDURE_OCCURRENCE_LINKS.parquet")


def _write_batched_omop(folder: Path) -> None:
    """Ten procedures in two part files per table, with float ids as Spark writes them;
    procedures 1 to 6 are imaging studies, 7 to 10 are not."""
    public = folder / "public" / "omop" / "procedure_occurrence"
    people = folder / "private" / "person_links"
    links = folder / "private" / "procedure_occurrence_links"
    for part in (public, people, links):
        part.mkdir(parents=True)
    _write_summary(folder)
    ids = list(range(1, 11))
    persons = [1, 1, 2, 3, 2, 2, 1, 2, 1, 2]
    dates = [datetime.date(2020, 1, 1) + datetime.timedelta(days=30 * i) for i in ids]
    accessions = [f"ACC{1000 + i}" if i <= 6 else None for i in ids]
    uids = [f"1.2.826.0.1.3680043.8.498.2000{i}" if i <= 6 else None for i in ids]
    mrns = [f"MRN{5000 + p}" for p in ids]
    for part, rows in enumerate((slice(0, 5), slice(5, 10))):
        name = f"part-{part}.parquet"
        pq.write_table(_procedure_table(ids[rows], persons[rows], dates[rows], pa.float64()), public / name)
        pq.write_table(_people_table(ids[rows], mrns[rows], pa.float64()), people / name)
        pq.write_table(_links_table(ids[rows], accessions[rows], uids[rows], pa.float64()), links / name)


def _write_csv_cohorts(root: Path) -> None:
    resources = root / "omop-resources"
    rows = [f"{i},mrn,{acc},i-am-a-project,2023-01-01T00:00:00Z,2023-01-01,{uid},"
            for i, acc, uid in ((1, "123", "1.2.3"), (2, "234", "2.3.4"), (3, "345", "3.4.5"))]
    (resources / "batch_input.csv").write_text("\n".join([_CSV_HEADER, *rows]) + "\n")
    duplicate = "4,mrn,123,i-am-a-project,2024-01-01T00:00:00Z,2023-01-01,1.2.3,"  # row 1 again
    (resources / "duplicate_input.csv").write_text("\n".join([_CSV_HEADER, *rows, duplicate]) + "\n")
    # Padded values, a duplicate, and rows with nothing to find a study by.
    (resources / "test_whitespace_and_na_processing.csv").write_text(f"""{_SERIES_HEADER}
0, patient_identifier , 123456789 , ms-pinpoint-test ,2023-01-01T00:01:00Z,2022-01-01, 1.2.3.4.5.6.7.8 , ,
1, patient_identifier , 123456789 , ms-pinpoint-test ,2023-01-01T00:01:00Z,2022-01-01, 1.2.3.4.5.6.7.8 , ,
2, whitespace_idenfifiers , ,ms-pinpoint-test,2023-01-01T00:01:00Z,2022-01-01, , ,
3, NA_idenfifiers ,,ms-pinpoint-test,2023-01-01T00:01:00Z,2022-01-01,,,
""")
    series = root / "series-level-querying"
    series.mkdir()
    request = (f"4,{MRN},AA12345601,test-extract-uclh-omop-cdm,2023-12-07T14:08:58Z,2020-05-23,"
               f"{STUDY_UID},{SERIES_UIDS[0]}\\{SERIES_UIDS[1]},")
    (series / "all-series.csv").write_text(f"{_SERIES_HEADER}\n{request}\n")
