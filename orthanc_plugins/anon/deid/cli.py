"""`pixl-deid`: de-identify local DICOM files with a project's rules, offline, and write a
review report.

    pixl-deid --project SLUG [--projects-dir DIR] [--tag-rules-dir DIR]
              [--key-file FILE] --output DIR INPUT...

The project's secret key (the pseudonyms and UIDs depend on it) comes from
`--key-file`, else the environment variable PIXL_DEID_KEY, else a key file
generated once at `$PIXL_STATE_DIR/deid-keys/<slug>.key` (mode 0600).
Outputs are written as OUTPUT/<study uid>/<series uid>/<sop uid>.dcm, with
OUTPUT/report.json and OUTPUT/report.md. Nothing quarantined is written. The
report names inputs by number and content hash, never by path (paths are often
patient names), and validates every kept output against its source.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_preamble

from orthanc_plugins.anon.deid.engine import (
    CompiledProject,
    DeidResult,
    deidentify_instance,
    load_compiled_project,
)
from orthanc_plugins.anon.deid.filters import series_below_minimum
from orthanc_plugins.anon.deid.pseudonyms import Pseudonymizer
from orthanc_plugins.anon.deid.report import FileOutcome, RunReport
from orthanc_plugins.anon.deid.validation import validate_output
from orthanc_plugins.common.projects import ProjectConfigError
from orthanc_plugins.common.settings import REPO_ROOT, load_env_file, load_settings

KEY_ENV = "PIXL_DEID_KEY"
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    load_env_file()  # PIXL_STATE_DIR, where a generated key is kept
    args = _parser().parse_args(argv)
    try:
        project = load_compiled_project(args.project, args.projects_dir, args.tag_rules_dir)
    except ProjectConfigError as exc:
        print(f"pixl-deid: invalid project configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        key = read_key(args.key_file, project.slug)
    except ValueError as exc:
        print(f"pixl-deid: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    args.output.mkdir(parents=True, exist_ok=True)
    report = run(project, key, [Path(p) for p in args.inputs], args.output)
    json_path, md_path = report.write(args.output)
    counts = report.status_counts()
    print(" ".join(f"{status}={counts.get(status, 0)}"
                   for status in ("kept", "dropped", "quarantined", "skipped")))
    print(f"report: {md_path} and {json_path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixl-deid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="project slug (projects/<slug>.yaml)")
    parser.add_argument("--projects-dir", type=Path, default=REPO_ROOT / "projects")
    parser.add_argument("--tag-rules-dir", type=Path, default=REPO_ROOT / "tag_rules")
    parser.add_argument("--key-file", type=Path, help=f"file holding the project's secret key "
                        f"(default: ${KEY_ENV}, else a generated local key file)")
    parser.add_argument("--output", type=Path, required=True, help="folder for outputs and report")
    parser.add_argument("inputs", nargs="+", help="DICOM files or folders (searched recursively)")
    return parser


def read_key(key_file: Path | None, slug: str) -> bytes:
    if key_file is not None:
        return _key_from_text(key_file.read_text(encoding="utf-8"), str(key_file))
    if os.environ.get(KEY_ENV):
        return _key_from_text(os.environ[KEY_ENV], KEY_ENV)
    path = load_settings().state_dir / "deid-keys" / f"{slug}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        print(f"pixl-deid: generated a new key for project {slug} at {path}", file=sys.stderr)
    return _key_from_text(path.read_text(encoding="utf-8"), str(path))


def _key_from_text(text: str, where: str) -> bytes:
    key = text.strip().encode("utf-8")
    if len(key) < 16:
        raise ValueError(f"the key in {where} is shorter than 16 bytes")
    return key


def run(project: CompiledProject, key: bytes, inputs: list[Path], output: Path) -> RunReport:
    """De-identify every file, then apply the study-level minimum of instances per series."""
    report = RunReport(project)
    pseudonyms = Pseudonymizer(key, project.slug)
    kept: dict[int, tuple[DeidResult, Path]] = {}  # report index -> result and written file
    written: dict[str, str] = {}  # new SOP Instance UID -> the input that wrote it
    for number, path in enumerate(_files(inputs), start=1):
        name = f"#{number}"
        if not _is_dicom(path):
            report.add_file(FileOutcome(name, "skipped", "not a DICOM Part 10 file"))
            continue
        data = path.read_bytes()
        name = f"#{number} sha256:{hashlib.sha256(data).hexdigest()[:16]}"
        try:
            result = deidentify_instance(data, project, key, audit=report.audit)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a review run
            # The type only: a message could quote a value of the file.
            report.add_file(FileOutcome(name, "quarantined",
                                        f"could not be processed ({type(exc).__name__})"))
            continue
        if not result.kept:
            report.add_file(FileOutcome(name, result.status, result.reason))
            continue
        if result.sop_instance_uid in written:
            report.add_file(FileOutcome(name, "quarantined", "same SOP Instance UID as input "
                                        f"{written[result.sop_instance_uid]}: not written over it"))
            continue
        written[result.sop_instance_uid] = name
        target = output / result.study_uid / result.series_uid / f"{result.sop_instance_uid}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(result.data or b"")
        kept[len(report.files)] = (result, target)
        source = dcmread(BytesIO(data), force=True)
        validation = validate_output(source, dcmread(BytesIO(result.data or b"")), result,
                                     pseudonyms, str(source.get("PatientID") or ""))
        report.add_file(FileOutcome(name, "kept", None, str(target.relative_to(output)),
                                    validation=validation.as_dict()))
    _apply_min_instances(report, kept, project.config.min_instances_per_series)
    return report


def _apply_min_instances(report: RunReport, kept: dict[int, tuple[DeidResult, Path]], minimum: int) -> None:
    counts = Counter((r.study_uid, r.series_uid) for r, _ in kept.values())
    short = series_below_minimum(counts, minimum)
    for index, (result, target) in kept.items():
        series = (result.study_uid, result.series_uid)
        if series in short:
            target.unlink()
            report.replace_file(index, FileOutcome(
                report.files[index].input, "dropped",
                f"series has {counts[series]} instance(s); min_instances_per_series is {minimum}"))


def _files(inputs: list[Path]) -> Iterator[Path]:
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            read_preamble(handle, force=False)
    except (InvalidDicomError, OSError):
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
