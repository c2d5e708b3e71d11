"""Loading an extract: read a PIXL CSV cohort or an OMOP ES extract, normalise
its rows, and queue one study job per requested study in one transaction.

Both OMOP layouts are read: flat files (`private/PERSON_LINKS.parquet`, ...)
and batched dataset folders (`private/person_links/part-N.parquet`, ...).
Errors name the file, row and column, never the identifying value there.
The public parquet files are kept under the state directory for the parquet
export; the private link files go nowhere but into the database.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from slugify import slugify

from orthanc_plugins.common.projects import ProjectConfigError, load_project_by_slug, project_path
from orthanc_plugins.common.secrets import SecretsError, open_secret_store
from orthanc_plugins.common.settings import Settings
from pixl_hooks.plugins import check_project_destinations

# Values that mean "no value" in a cohort file, as pandas (used by PIXL) read them.
NA_VALUES = frozenset(
    {"", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "null", "NULL", "None", "<NA>", "#N/A"}
)
CSV_REQUIRED_COLUMNS = (
    "procedure_id", "mrn", "accession_number", "project_name",
    "extract_generated_timestamp", "study_date",
)
SERIES_SEPARATOR = "\\"


class ExtractError(ValueError):
    """An extract that cannot be loaded; the message names file, row and column."""


@dataclass(frozen=True)
class ExtractRow:
    """One requested study (or set of series). Identifying fields stay out of repr."""

    mrn: str = field(repr=False)
    accession_number: str = field(repr=False)
    study_uid: str = field(repr=False)
    series_uids: tuple[str, ...] = field(repr=False)
    study_date: datetime.date | None
    procedure_occurrence_id: int | None

    @property
    def study_key(self) -> tuple[str, str, str, tuple[str, ...]]:
        return (self.mrn, self.accession_number, self.study_uid, self.series_uids)


@dataclass
class ParsedExtract:
    project_slug: str
    extract_name: str
    generated_at: datetime.datetime
    source_kind: str  # "omop" or "csv"
    rows: list[ExtractRow]
    public_source: Path | None = None  # the extract's public/ folder, kept for the export


@dataclass(frozen=True)
class LoadSummary:
    project: str
    extract: str
    studies: int
    queued: int
    already_exported: int
    modalities: list[str]
    destination: dict[str, str]
    dry_run: bool
    destination_problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "project": self.project, "extract": self.extract, "studies": self.studies,
            "queued": self.queued, "already_exported": self.already_exported,
            "modalities": self.modalities, "destination": self.destination,
            "destination_problems": self.destination_problems, "dry_run": self.dry_run,
        }


# --- reading -----------------------------------------------------------------


def clean_value(value: object) -> str:
    """Strip whitespace; every spelling of "no value" becomes ""."""
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text in NA_VALUES else text


def extract_name_for(generated_at: datetime.datetime) -> str:
    """The extract's name: its UTC timestamp, slugified ("2023-12-07t14-08-58")."""
    utc = generated_at.astimezone(datetime.UTC).replace(tzinfo=None)
    return slugify(utc.isoformat(timespec="seconds"))


def _parse_timestamp(text: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(text)  # 3.11 reads a trailing "Z"
    # Timestamps without a zone are taken as UTC: extracts carry no zone.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _split_series(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(sorted({clean_value(part) for part in text.split(SERIES_SEPARATOR)} - {""}))


def read_csv_cohort(data: bytes, filename: str) -> ParsedExtract:
    """A PIXL CSV cohort: one row per study, optional `series_uid` (several split by `\\`)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractError(f"{filename}: not UTF-8 text (byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text))
    header = [clean_value(name) for name in next(reader, [])]
    missing = [column for column in CSV_REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ExtractError(f"{filename}: missing column(s) {', '.join(missing)}")
    column = {name: index for index, name in enumerate(header)}
    projects: set[str] = set()
    timestamps: dict[str, datetime.datetime] = {}  # parsed once per distinct text
    rows = []
    for record in reader:
        if not record:
            continue
        line = reader.line_num
        if len(record) > len(header):
            raise ExtractError(f"{filename} line {line}: more values than columns")
        record += [""] * (len(header) - len(record))

        def cell(name: str, record=record) -> str:
            index = column.get(name)  # optional columns may be absent
            return "" if index is None else clean_value(record[index])

        if not cell("mrn"):
            raise ExtractError(f"{filename} line {line}, column mrn: empty")
        projects.add(cell("project_name"))
        stamp = cell("extract_generated_timestamp")
        if stamp not in timestamps:
            timestamps[stamp] = _csv_field(filename, line, "extract_generated_timestamp", stamp, _parse_timestamp)
        rows.append(
            ExtractRow(
                mrn=cell("mrn"),
                accession_number=cell("accession_number"),
                study_uid=cell("study_uid"),
                series_uids=_split_series(cell("series_uid")),
                study_date=_csv_field(filename, line, "study_date", cell("study_date"), datetime.date.fromisoformat),
                procedure_occurrence_id=_csv_field(filename, line, "procedure_id", cell("procedure_id"), int),
            )
        )
    if not rows:
        raise ExtractError(f"{filename}: no rows")
    if "" in projects:
        raise ExtractError(f"{filename}, column project_name: empty on some rows")
    if len(projects) != 1:
        raise ExtractError(
            f"{filename}, column project_name: rows of {len(projects)} projects; load one project per file"
        )
    # A cohort assembled over time carries several timestamps: it is as of its latest.
    generated_at = max(timestamps.values())
    return ParsedExtract(
        project_slug=slugify(projects.pop()),
        extract_name=extract_name_for(generated_at),
        generated_at=generated_at,
        source_kind="csv",
        rows=normalise_rows(rows),
    )


def _csv_field(filename: str, line: int, column: str, text: str, parse):
    if text == "" and column in ("study_date", "procedure_id"):
        return None
    try:
        return parse(text)
    except ValueError:
        raise ExtractError(f"{filename} line {line}, column {column}: not a valid value") from None


def normalise_rows(rows: list[ExtractRow]) -> list[ExtractRow]:
    """Drop repeated requests (same MRN, accession, study and series), keeping the first."""
    seen: set[tuple] = set()
    unique = []
    for row in rows:
        if row.study_key not in seen:
            seen.add(row.study_key)
            unique.append(row)
    return unique


# OMOP ES: (flat file, batched folder) under the extract folder, and the columns PIXL reads.
OMOP_TABLES = {
    "person_links": ("private/PERSON_LINKS.parquet", "private/person_links", ("person_id", "PrimaryMrn")),
    "procedure_links": (
        "private/PROCEDURE_OCCURRENCE_LINKS.parquet",
        "private/procedure_occurrence_links",
        ("procedure_occurrence_id", "AccessionNumber", "StudyUid_X"),
    ),
    "procedures": (
        "public/omop/PROCEDURE_OCCURRENCE.parquet",
        "public/omop/procedure_occurrence",
        ("procedure_occurrence_id", "person_id", "procedure_date"),
    ),
}


def _read_omop_table(folder: Path, table: str) -> tuple[str, pa.Table]:
    flat, batched, columns = OMOP_TABLES[table]
    if (folder / flat).is_file():
        paths, shown = [folder / flat], flat
    elif (folder / batched).is_dir() and sorted((folder / batched).glob("*.parquet")):
        paths, shown = sorted((folder / batched).glob("*.parquet")), batched
    else:
        raise ExtractError(f"OMOP extract: neither {flat} nor {batched}/*.parquet found")
    parts = []
    for path in paths:
        name = f"{shown}/{path.name}" if path.parent.name != Path(flat).parent.name else shown
        try:
            part = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise ExtractError(f"{name}: not a readable parquet file ({type(exc).__name__})") from None
        missing = [column for column in columns if column not in part.column_names]
        if missing:
            raise ExtractError(f"{name}: missing column(s) {', '.join(missing)}")
        parts.append(part.select(list(columns)))
    return shown, pa.concat_tables(parts, promote_options="permissive")


def _as_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ExtractError(f"{where}: not a whole number")
    if isinstance(value, float) and not value.is_integer():
        raise ExtractError(f"{where}: not a whole number")
    try:
        return int(value)
    except (ValueError, OverflowError):
        raise ExtractError(f"{where}: not a whole number") from None


def _as_text(value: object, where: str) -> str:
    """A cell holding an identifier: text (or a whole number, as some extracts write MRNs)."""
    if value is None or isinstance(value, str):
        return clean_value(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ExtractError(f"{where}: not text")


def _as_date(value: object, where: str) -> datetime.date | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise ExtractError(f"{where}: not a date")


def read_omop_extract(folder: Path) -> ParsedExtract:
    """An OMOP ES extract folder (the one holding `extract_summary.json`)."""
    summary_path = folder / "extract_summary.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        source_name = summary["settings"]["cdm_source_name"]
        generated_at = _parse_timestamp(summary["datetime"])
    except FileNotFoundError:
        raise ExtractError("OMOP extract: extract_summary.json not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ExtractError(
            f"extract_summary.json: needs settings.cdm_source_name and a datetime ({type(exc).__name__})"
        ) from None
    people_file, people = _read_omop_table(folder, "person_links")
    links_file, links = _read_omop_table(folder, "procedure_links")
    procedures_file, procedures = _read_omop_table(folder, "procedures")

    mrn_by_person = {}
    for index, (person, mrn) in enumerate(
        zip(people["person_id"].to_pylist(), people["PrimaryMrn"].to_pylist(), strict=True)
    ):
        where = f"{people_file} row {index + 1}, column"
        mrn_by_person[_as_int(person, f"{where} person_id")] = _as_text(mrn, f"{where} PrimaryMrn")
    link_by_procedure = {}
    for index, (procedure, accession, study_uid) in enumerate(
        zip(*(links[c].to_pylist() for c in OMOP_TABLES["procedure_links"][2]), strict=True)
    ):
        where = f"{links_file} row {index + 1}, column"
        link_by_procedure[_as_int(procedure, f"{where} procedure_occurrence_id")] = (
            _as_text(accession, f"{where} AccessionNumber"),
            _as_text(study_uid, f"{where} StudyUid_X"),
        )
    if procedures.num_rows == 0:
        raise ExtractError(f"{procedures_file}: no rows")

    rows = []
    for index, (procedure, person, date) in enumerate(
        zip(*(procedures[c].to_pylist() for c in OMOP_TABLES["procedures"][2]), strict=True)
    ):
        where = f"{procedures_file} row {index + 1}"
        procedure_id = _as_int(procedure, f"{where}, column procedure_occurrence_id")
        accession, study_uid = link_by_procedure.get(procedure_id, ("", ""))
        if not accession and not study_uid:
            continue  # a procedure that is not an imaging study
        mrn = mrn_by_person.get(_as_int(person, f"{where}, column person_id"), "")
        if not mrn:
            raise ExtractError(f"{where}, column person_id: no PrimaryMrn in {people_file}")
        rows.append(
            ExtractRow(
                mrn=mrn, accession_number=accession, study_uid=study_uid, series_uids=(),
                study_date=_as_date(date, f"{where}, column procedure_date"),
                procedure_occurrence_id=procedure_id,
            )
        )
    if not rows:
        raise ExtractError(f"{links_file}: no procedure has an accession number or study UID")
    public = folder / "public"
    return ParsedExtract(
        project_slug=slugify(str(source_name)),
        extract_name=extract_name_for(generated_at),
        generated_at=generated_at,
        source_kind="omop",
        rows=normalise_rows(rows),
        public_source=public if public.is_dir() else None,
    )


def read_upload(body: bytes, content_type: str, filename: str, workdir: Path) -> ParsedExtract:
    """An extract as uploaded to `POST /pixl/extracts` (see docs/rest-api.md)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("text/csv", "application/csv"):
        return read_csv_cohort(body, filename or "cohort.csv")
    if kind in ("application/zip", "application/x-zip-compressed"):
        return read_omop_extract(unpack_zip(body, workdir))
    raise ExtractError(
        f"unsupported Content-Type {kind!r}: send text/csv or application/zip"
    )


def unpack_zip(body: bytes, workdir: Path) -> Path:
    """Unpack an uploaded zip; return the folder holding extract_summary.json."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except zipfile.BadZipFile:
        raise ExtractError("upload: not a zip file") from None
    with archive:
        summaries = []
        for member in archive.infolist():
            path = PurePosixPath(member.filename)
            if path.is_absolute() or ".." in path.parts:
                raise ExtractError(f"upload: zip member {member.filename!r} leaves the extract folder")
            if path.name == "extract_summary.json":
                summaries.append(path.parent)
        if len(summaries) != 1:
            raise ExtractError(
                f"upload: the zip must hold exactly one extract_summary.json, found {len(summaries)}"
            )
        archive.extractall(workdir)
    return workdir / summaries[0]


# --- projects ------------------------------------------------------------------


def project_summary(settings: Settings, slug: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(modalities, destination, destination problems) of a configured project.

    An unknown or invalid project is an ExtractError. Destination problems (a
    secret not set, an unknown destination) are reported, not refused: the
    operator sees them before confirming and can fix them while studies are
    fetched (a study whose export failed on them is retried from the failures list).
    """
    if not project_path(slug, settings.projects_dir).is_file():
        raise ExtractError(f"unknown project {slug!r}: no {slug}.yaml in the projects folder")
    try:
        config = load_project_by_slug(slug, settings.projects_dir, settings.tag_rules_dir)
    except ProjectConfigError as exc:
        raise ExtractError(f"project {slug!r} has an invalid configuration: {exc}") from None
    destination = {"dicom": config.dicom_destination, "parquet": config.parquet_destination}
    try:
        problems = check_project_destinations(config, open_secret_store(settings))
    except SecretsError as exc:
        problems = [str(exc)]
    return list(config.modalities), destination, problems


# --- queueing ------------------------------------------------------------------


def public_dir_for(settings: Settings, project: str, extract: str) -> Path:
    return settings.state_dir / "extracts" / project / extract / "public"


_INSERT_JOBS = """
WITH inserted AS (
    INSERT INTO study_jobs (
        extract_id, project_slug, mrn, accession_number, study_uid, series_uids,
        study_date, procedure_occurrence_id, state, last_error,
        pseudo_patient_id, pseudo_study_uid, state_times)
    SELECT %(extract_id)s, %(project)s, r.mrn, r.accession_number, r.study_uid, r.series_uids,
           r.study_date, r.procedure_occurrence_id, s.state,
           CASE s.state WHEN 'skipped' THEN 'row has neither accession number nor study UID' END,
           prev.pseudo_patient_id, prev.pseudo_study_uid,
           jsonb_build_object(s.state, now())
    FROM extract_rows r
    LEFT JOIN LATERAL (
        -- the same study already exported for this project by an earlier extract
        SELECT j.pseudo_patient_id, j.pseudo_study_uid FROM study_jobs j
        WHERE j.project_slug = %(project)s AND j.state = 'exported'
          AND j.extract_id <> %(extract_id)s
          AND j.study_uid = r.study_uid AND j.series_uids = r.series_uids
          AND (r.study_uid <> '' OR (j.accession_number = r.accession_number AND j.mrn = r.mrn))
        LIMIT 1) prev ON true
    CROSS JOIN LATERAL (SELECT CASE
        WHEN r.accession_number = '' AND r.study_uid = '' THEN 'skipped'
        WHEN prev.pseudo_study_uid IS NOT NULL OR prev.pseudo_patient_id IS NOT NULL THEN 'exported'
        ELSE 'queued' END AS state) s
    ORDER BY r.ord
    ON CONFLICT (extract_id, mrn, accession_number, study_uid, series_uids) DO NOTHING
    RETURNING state)
SELECT state, count(*) FROM inserted GROUP BY state
"""


def queue_extract(
    conn: psycopg.Connection, settings: Settings, extract: ParsedExtract, *, dry_run: bool = False
) -> LoadSummary:
    """Record the extract and queue its studies: all or nothing, idempotent.

    A dry run does the same work inside the transaction and rolls it back, so
    its counts are exactly what a real load would do.
    """
    modalities, destination, problems = project_summary(settings, extract.project_slug)
    public_target = public_dir_for(settings, extract.project_slug, extract.extract_name)
    copied_public = False
    try:
        with conn.transaction() as tx:
            extract_id = _upsert_extract(conn, extract, public_target)
            counts = _insert_jobs(conn, extract_id, extract)
            if dry_run:
                raise psycopg.Rollback(tx)
            if extract.public_source is not None and not public_target.exists():
                shutil.copytree(extract.public_source, public_target)
                copied_public = True
    except BaseException:
        if copied_public:  # the database said no: leave no files of a load that did not happen
            shutil.rmtree(public_target, ignore_errors=True)
        raise
    return LoadSummary(
        project=extract.project_slug, extract=extract.extract_name, studies=len(extract.rows),
        queued=counts.get("queued", 0), already_exported=counts.get("exported", 0),
        modalities=modalities, destination=destination, dry_run=dry_run,
        destination_problems=problems,
    )


def _upsert_extract(conn: psycopg.Connection, extract: ParsedExtract, public_target: Path) -> int:
    row = conn.execute(
        "INSERT INTO extracts (project_slug, extract_name, generated_at, source_kind, public_dir)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (project_slug, extract_name) DO UPDATE SET project_slug = EXCLUDED.project_slug"
        " RETURNING id",
        (
            extract.project_slug, extract.extract_name, extract.generated_at, extract.source_kind,
            str(public_target) if extract.public_source is not None else None,
        ),
    ).fetchone()
    return int(row[0])


def _insert_jobs(conn: psycopg.Connection, extract_id: int, extract: ParsedExtract) -> dict[str, int]:
    conn.execute(
        "CREATE TEMP TABLE extract_rows (ord integer, mrn text, accession_number text,"
        " study_uid text, series_uids text[], study_date date, procedure_occurrence_id bigint)"
        " ON COMMIT DROP"
    )
    with conn.cursor().copy(
        "COPY extract_rows (ord, mrn, accession_number, study_uid, series_uids, study_date,"
        " procedure_occurrence_id) FROM STDIN"
    ) as copy:
        copy.set_types(["int4", "text", "text", "text", "text[]", "date", "int8"])
        for ord_, row in enumerate(extract.rows):
            copy.write_row((
                ord_, row.mrn, row.accession_number, row.study_uid, list(row.series_uids),
                row.study_date, row.procedure_occurrence_id,
            ))
    params = {"extract_id": extract_id, "project": extract.project_slug}
    return {state: int(n) for state, n in conn.execute(_INSERT_JOBS, params).fetchall()}
