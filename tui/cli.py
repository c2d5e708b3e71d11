"""`pixl-tui`: the operator console, or with a subcommand, one scriptable step.

Every subcommand makes the same REST calls as the app (through tui.client)
and ends with an exit code from tui/exit_codes.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from tui import exit_codes
from tui.client import (
    PLAIN_HTTP_VARIABLE,
    ArchiveStudy,
    ExtractStatus,
    InvalidInput,
    RawApiError,
    RawClient,
    check_transport,
    config_from_environment,
    prepare_upload,
)
from tui.report_files import write_report
from tui.schedule_text import effective_line, parse_window, window_text

DEFAULT_POLL_SECONDS = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixl-tui",
        description="PIXL operator console. Without a subcommand, opens the terminal app.",
        epilog="Server: --url, else PIXL_RAW_URL, else raw's URL from the PIXL settings. "
        "Credentials: ORTHANC_USERNAME / ORTHANC_PASSWORD. Exit codes: see tui/exit_codes.py "
        "(0 ok, 3 unreachable, 4 credentials refused, 5 invalid input, 6 partial failure, "
        "7 server error, 8 declined, 9 timed out).",
    )
    parser.add_argument("--url", help="base URL of the raw Orthanc (overrides PIXL_RAW_URL)")
    parser.add_argument("--ca-bundle", help="CA certificates raw's certificate must be signed by "
                        "(overrides PIXL_TLS_CA_BUNDLE)")
    parser.add_argument("--plain-http-loopback", action="store_true",
                        help=f"allow http:// to raw on this machine (or {PLAIN_HTTP_VARIABLE}=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    load = commands.add_parser("load", help="load an extract (CSV cohort or OMOP ES folder)")
    load.add_argument("path", help="a .csv cohort, or an OMOP ES extract folder")
    load.add_argument("--yes", "-y", action="store_true", help="queue without asking")
    load.add_argument("--dry-run", action="store_true", help="validate and summarise only")
    load.add_argument("--limit", type=_positive_int, metavar="N", help="queue only the first N studies")
    load.add_argument(
        "--practice",
        action="store_true",
        help="fetch and de-identify, export nothing and keep nothing (try a project on real data)",
    )
    load.add_argument(
        "--priority", type=_priority, metavar="1-5", help="5 is fetched first (default 1)"
    )
    _add_wait(load, "wait until every study of the extract has finished")

    status = commands.add_parser("status", help="progress of every extract")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    export = commands.add_parser("export", help="export an extract's parquet files")
    export.add_argument("project", help="project slug")
    export.add_argument("extract", help="extract name, as shown by `status`")
    _add_wait(export, "wait until the export has finished")

    failures = commands.add_parser(
        "failures", help="studies that failed or were not found (exit 6 if any)"
    )
    failures.add_argument("--project")
    failures.add_argument("--extract")
    failures.add_argument("--json", action="store_true", help="machine-readable output")

    retry = commands.add_parser("retry", help="queue failed or not-found studies again")
    retry.add_argument("job_ids", nargs="*", type=int, metavar="JOB_ID")
    retry.add_argument("--all", action="store_true", help="every failure (of --project/--extract)")
    retry.add_argument("--project")
    retry.add_argument("--extract")

    controls = commands.add_parser("controls", help="show or change the transfer controls")
    controls.add_argument("--rate", type=float, help="studies per second (> 0)")
    controls.add_argument("--in-flight", type=int, help="most transfers at once (>= 0)")
    pause = controls.add_mutually_exclusive_group()
    pause.add_argument("--pause", action="store_true", help="stop starting transfers")
    pause.add_argument("--resume", action="store_true", help="start transfers again")
    controls.add_argument("--json", action="store_true", help="machine-readable output")
    schedule_commands = controls.add_subparsers(dest="controls_command", metavar="schedule")
    schedule = schedule_commands.add_parser(
        "schedule", help="the weekly schedule of the limits (show, set, clear)"
    )
    schedule.add_argument("action", nargs="?", choices=("show", "set", "clear"), default="show")
    schedule.add_argument("--time-zone", help="IANA time zone of the windows, e.g. Europe/London")
    schedule.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="'DAYS HH:MM-HH:MM [rate=R] [in-flight=N]'",
        help="a window, e.g. 'weekdays 08:00-20:00 rate=1/min in-flight=1' (repeat for more); "
        "DAYS: mon,tue,... or weekdays, weekends, daily; R per second, or N/min, N/h",
    )
    schedule.add_argument("--json", action="store_true", help="machine-readable output")

    priority = commands.add_parser("priority", help="change an extract's priority, also while it runs")
    priority.add_argument("project")
    priority.add_argument("extract")
    priority.add_argument("priority", type=_priority, metavar="1-5", help="5 is fetched first")

    cancel = commands.add_parser(
        "cancel", help="cancel an extract: queued studies withdrawn, those in flight finish"
    )
    cancel.add_argument("project")
    cancel.add_argument("extract")
    cancel.add_argument("--yes", "-y", action="store_true", help="cancel without asking")

    report = commands.add_parser("report", help="write an extract's report (HTML and JSON)")
    report.add_argument("project")
    report.add_argument("extract")
    report.add_argument(
        "--output", default=".", metavar="FOLDER", help="where to write it (default: here)"
    )

    vna = commands.add_parser("vna", help="the archive, seen from raw: echo, find")
    vna_commands = vna.add_subparsers(dest="vna_command", metavar="COMMAND", required=True)
    vna_commands.add_parser("echo", help="C-ECHO the archive from raw")
    find = vna_commands.add_parser(
        "find", help="C-FIND studies in the archive through raw (the values are never logged)"
    )
    find.add_argument("--mrn")
    find.add_argument("--accession")
    find.add_argument("--study-uid")
    find.add_argument("--date", metavar="FROM[-TO]", help="YYYY-MM-DD or YYYYMMDD, or a range")
    find.add_argument("--modality", help="e.g. CT")
    find.add_argument("--json", action="store_true", help="machine-readable output")

    audit = commands.add_parser("audit", help="who read or sent identifiable data, who changed what")
    audit.add_argument("--user", help="one user's records")
    audit.add_argument("--action", help="actions containing this text, e.g. archive or controls")
    audit.add_argument("--since", help="from this ISO date or time")
    audit.add_argument("--until", help="before this ISO date or time")
    audit.add_argument("--refused", action="store_true", help="refused requests only")
    audit.add_argument("--limit", type=int, default=200, help="at most this many (newest first)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser("health", help="check that raw answers and its database is up")
    destinations = commands.add_parser("destinations", help="the installed destination plugins")
    destinations.add_argument("--json", action="store_true", help="machine-readable output")
    plugins = commands.add_parser(
        "plugins", help="every plugin, its hooks and destinations, and recent hook errors"
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _priority(text: str) -> int:
    value = _positive_int(text)
    if value > 5:
        raise argparse.ArgumentTypeError("must be 1 to 5")
    return value


def _add_wait(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--wait", action="store_true", help=help_text)
    parser.add_argument(
        "--poll",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        metavar="SECONDS",
        help=f"seconds between checks while waiting (default {DEFAULT_POLL_SECONDS:g})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0,
        metavar="SECONDS",
        help="give up waiting after this long, exit 9 (default: wait forever)",
    )


class TimedOut(RawApiError):
    exit_code = exit_codes.TIMED_OUT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_environment()
    except ValueError as exc:  # a malformed PIXL_* variable
        return _fail(str(exc), exit_codes.INVALID_INPUT)
    config = dataclasses.replace(
        config, url=(args.url or config.url).rstrip("/"), ca_bundle=args.ca_bundle or config.ca_bundle,
        plain_http_loopback=args.plain_http_loopback or config.plain_http_loopback,
    )
    client = RawClient(config)
    try:
        check_transport(config)
        if args.command is None:
            return run_app(client)
        return COMMANDS[args.command](client, args, sys.stdout)
    except RawApiError as error:
        return _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def run_app(client: RawClient) -> int:
    from tui.app import PixlApp

    PixlApp(client).run()
    return exit_codes.OK


def _fail(message: str, code: int) -> int:
    print(f"pixl-tui: {message}", file=sys.stderr)
    return code


def cmd_health(client: RawClient, _args: argparse.Namespace, out: TextIO) -> int:
    health = client.health()
    print(
        f"raw {health.version} at {client.url}: database {health.database}, "
        f"schema {health.schema_version}",
        file=out,
    )
    return exit_codes.OK if health.healthy else exit_codes.SERVER_ERROR


def cmd_destinations(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    destinations = client.destinations()
    if args.json:
        _print_json([dataclasses.asdict(d) for d in destinations], out)
        return exit_codes.OK
    for destination in destinations:
        print(f"{destination.name:<12} {destination.module}  hooks: {', '.join(destination.hooks)}",
              file=out)
    return exit_codes.OK


def cmd_plugins(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    listing = client.plugins()
    if args.json:
        _print_json(dataclasses.asdict(listing), out)
        return exit_codes.OK
    for plugin in listing.plugins:
        provides = f"  destinations: {', '.join(plugin.destinations)}" if plugin.destinations else ""
        print(f"{plugin.name}  hooks: {', '.join(plugin.hooks) or '-'}{provides}", file=out)
    if listing.hook_errors:
        print(f"\nrecent hook errors ({len(listing.hook_errors)}, newest first):", file=out)
    for error in listing.hook_errors:
        print(f"{error.recorded_at}  {error.sentence()}", file=out)
    return exit_codes.OK


def cmd_load(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    upload = prepare_upload(args.path)
    options = {"limit": args.limit, "practice": args.practice, "priority": args.priority}
    summary = client.load_extract(upload, dry_run=True, **options)
    destination = ", ".join(f"{kind}: {name}" for kind, name in summary.destination.items())
    limited = (
        f", the first {summary.studies} of {summary.studies_in_extract} (--limit)"
        if summary.limit and summary.studies_in_extract != summary.studies
        else ""
    )
    print(
        f"project      {summary.project}\n"
        f"extract      {summary.extract}\n"
        f"studies      {summary.studies} ({summary.queued} to queue, "
        f"{summary.already_exported} already exported{limited})\n"
        f"modalities   {', '.join(summary.modalities) or '-'}\n"
        f"destination  {destination or '-'}"
        + (" (practice run: nothing will be exported)" if summary.practice else "")
        + f"\npriority     {summary.priority}",
        file=out,
    )
    for problem in summary.destination_problems:
        print(f"problem      {problem}", file=out)
    if summary.nothing_added():
        print(summary.nothing_added(), file=out)
    if args.dry_run:
        return exit_codes.OK
    what = "Practice on" if summary.practice else "Queue"
    if not args.yes and not _confirmed(f"{what} {summary.queued} studies? [y/N] ", out):
        print(
            "Not queued." + ("" if sys.stdin.isatty() else " Pass --yes to queue without asking."),
            file=sys.stderr,
        )
        return exit_codes.DECLINED
    queued = client.load_extract(upload, dry_run=False, **options)
    print(
        f"queued {queued.queued} of {queued.studies} studies of "
        f"{queued.project} / {queued.extract}" + (" (practice run)" if queued.practice else ""),
        file=out,
    )
    if queued.nothing_added():
        print(queued.nothing_added(), file=out)
    if not args.wait:
        return exit_codes.OK
    status = _wait_for_extract(client, queued.project, queued.extract, args, out)
    if status.practice:
        print(
            "practice run: nothing was exported and no de-identified copy kept; "
            f"`pixl-tui report {status.project} {status.extract}` shows what was kept and dropped",
            file=out,
        )
    return exit_codes.PARTIAL_FAILURE if status.problems else exit_codes.OK


def _confirmed(question: str, out: TextIO) -> bool:
    if not sys.stdin.isatty():
        return False
    print(question, end="", file=out, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _wait_for_extract(
    client: RawClient, project: str, extract: str, args: argparse.Namespace, out: TextIO
) -> ExtractStatus:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    last_line = ""
    while True:
        status = next(
            (s for s in client.extracts() if s.project == project and s.extract == extract), None
        )
        if status is None:
            raise InvalidInput(f"the server does not list the extract {project} / {extract}")
        line = _status_line(status)
        if line != last_line:
            print(line, file=out, flush=True)
            last_line = line
        if status.done:
            return status
        _sleep_or_time_out(args.poll, deadline, f"the extract {project} / {extract}")


def _sleep_or_time_out(poll: float, deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() + poll > deadline:
        raise TimedOut(f"gave up waiting for {what} to finish")
    time.sleep(poll)


def _status_line(status: ExtractStatus) -> str:
    counts = " ".join(f"{state}={n}" for state, n in status.counts.items() if n)
    marks = "".join(
        f" [{mark}]"
        for mark, shown in (
            ("practice", status.practice),
            ("cancelled", status.cancelled_at),
            (f"priority {status.priority}", status.priority != 1),
        )
        if shown
    )
    return (
        f"{status.project} / {status.extract}{marks}: "
        f"{status.finished}/{status.total} finished ({counts})"
    )


def cmd_status(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    extracts = client.extracts()
    if args.json:
        _print_json(
            [
                asdict(status) | {"finished": status.finished, "done": status.done}
                for status in extracts
            ],
            out,
        )
        return exit_codes.OK
    if not extracts:
        print("no extracts loaded", file=out)
    for status in extracts:
        eta = (
            "done"
            if status.done
            else ("-" if status.eta_seconds is None else f"{status.eta_seconds:.0f}s")
        )
        rate = (
            "-"
            if status.throughput_per_minute is None
            else f"{status.throughput_per_minute:.1f}/min"
        )
        print(f"{_status_line(status)} rate={rate} eta={eta}", file=out)
        if status.last_error:
            print(f"  last error: {status.last_error}", file=out)
    return exit_codes.OK


def cmd_export(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    export = client.start_export(args.project, args.extract)
    print(
        f"export {export.export_id} of {export.project} / {export.extract}: {export.state}",
        file=out,
    )
    if not args.wait:
        return exit_codes.OK
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while export.state == "running":
        _sleep_or_time_out(args.poll, deadline, f"export {export.export_id}")
        export = next(
            (
                e
                for e in client.exports(args.project, args.extract)
                if e.export_id == export.export_id
            ),
            export,
        )
    print(
        f"export {export.export_id}: {export.state}\n"
        f"files        {export.export_dir or '-'}\n"
        f"uploaded to  {export.uploaded_to or '-'}",
        file=out,
    )
    if export.state != "done":
        print(f"error        {export.error or '-'}", file=out)
        return exit_codes.PARTIAL_FAILURE
    return exit_codes.OK


def cmd_audit(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    entries = client.audit(user=args.user, action=args.action, since=args.since, until=args.until,
                           allowed="no" if args.refused else None, limit=str(args.limit))
    if args.json:
        _print_json([asdict(entry) for entry in entries], out)
        return exit_codes.OK
    if not entries:
        print("no audit records", file=out)
    for entry in entries:
        print(f"{entry.at}\t{entry.node}\t{entry.user or '-'}\t{entry.role or '-'}\t"
              f"{'allowed' if entry.allowed else 'REFUSED'}\t{entry.action}\t{entry.resource}", file=out)
    return exit_codes.OK


def cmd_failures(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    failures = client.failures(args.project, args.extract)
    if args.json:
        _print_json([asdict(failure) for failure in failures], out)
    else:
        if not failures:
            print("no failures", file=out)
        for failure in failures:
            print(
                f"{failure.job_id}\t{failure.project}\t{failure.extract}\t{failure.state}\t"
                f"attempts={failure.attempts}\t{failure.last_error or ''}",
                file=out,
            )
    return exit_codes.PARTIAL_FAILURE if failures else exit_codes.OK


def cmd_retry(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.job_ids) == bool(args.all):
        raise InvalidInput("name the JOB_IDs to retry, or pass --all (not both)")
    if args.job_ids and (args.project or args.extract):
        raise InvalidInput("--project and --extract only narrow --all")
    count = client.retry(args.job_ids or None, project=args.project, extract=args.extract)
    print(f"retried {count}", file=out)
    return exit_codes.OK


def cmd_controls(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.controls_command == "schedule":
        return cmd_schedule(client, args, out)
    paused = True if args.pause else False if args.resume else None
    if args.rate is None and args.in_flight is None and paused is None:
        controls = client.controls()
    else:
        controls = client.set_controls(
            max_in_flight=args.in_flight, studies_per_second=args.rate, paused=paused
        )
    if args.json:
        _print_json(asdict(controls), out)
    else:
        print(
            f"{'paused' if controls.paused else 'running'}: "
            f"{controls.studies_per_second:g} studies/s, in flight "
            f"{controls.in_flight}/{controls.max_in_flight}",
            file=out,
        )
        schedule = client.schedule()
        if schedule.windows:  # else the line above is what applies, at all times
            print(f"now          {effective_line(schedule.effective)}", file=out)
    return exit_codes.OK


def cmd_schedule(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "set":
        if not args.time_zone or not args.window:
            raise InvalidInput("schedule set needs --time-zone and at least one --window")
        schedule = client.set_schedule(args.time_zone, [parse_window(w) for w in args.window])
    elif args.action == "clear":
        schedule = client.clear_schedule()
    else:
        schedule = client.schedule()
    if args.json:
        _print_json(asdict(schedule), out)
        return exit_codes.OK
    if schedule.time_zone is None or not schedule.windows:
        print("no schedule: the controls apply at all times", file=out)
    else:
        print(f"schedule in {schedule.time_zone}:", file=out)
        for window in schedule.windows:
            print(f"  {window_text(window)}", file=out)
    print(f"now: {effective_line(schedule.effective)}", file=out)
    return exit_codes.OK


def cmd_priority(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    priority = client.set_priority(args.project, args.extract, args.priority)
    print(f"{args.project} / {args.extract}: priority {priority}", file=out)
    return exit_codes.OK


def cmd_cancel(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    question = (
        f"Cancel {args.project} / {args.extract}? Its queued studies are withdrawn. [y/N] "
    )
    if not args.yes and not _confirmed(question, out):
        print(
            "Not cancelled." + ("" if sys.stdin.isatty() else " Pass --yes to cancel without asking."),
            file=sys.stderr,
        )
        return exit_codes.DECLINED
    result = client.cancel(args.project, args.extract)
    print(
        f"cancelled {result.project} / {result.extract}: {result.withdrawn} queued studies withdrawn, "
        f"{result.in_flight} in flight will finish, {result.exported} exported stay recorded",
        file=out,
    )
    return exit_codes.OK


def cmd_report(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    written = write_report(client, args.project, args.extract, Path(args.output))
    studies = written.report["studies"]
    print(
        f"{args.project} / {args.extract}: {studies['requested']} requested, {studies['found']} found, "
        f"{studies['retrieved']} retrieved, {studies['exported']} exported\n"
        f"report       {written.html_path}\n"
        f"data         {written.json_path}",
        file=out,
    )
    return exit_codes.OK


def cmd_vna(client: RawClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.vna_command == "echo":
        echo = client.vna_echo()
        if not echo.ok:
            print(f"pixl-tui: {echo.modality}: {echo.error}", file=sys.stderr)
            return exit_codes.UNREACHABLE
        print(f"{echo.modality} answered the C-ECHO from raw in {echo.seconds * 1000:.0f} ms", file=out)
        return exit_codes.OK
    studies = client.vna_find(
        mrn=args.mrn, accession=args.accession, study_uid=args.study_uid, date=args.date,
        modality=args.modality,
    )
    if args.json:
        _print_json([asdict(study) for study in studies], out)
        return exit_codes.OK
    print(find_table(studies), file=out)
    return exit_codes.OK


def find_table(studies: list[ArchiveStudy]) -> str:
    if not studies:
        return "no study in the archive matches"
    rows = [("date", "modality", "series", "instances", "in raw's cache")]
    rows += [
        (
            study.study_date or "-",
            ",".join(study.modalities) or "-",
            "-" if study.series is None else str(study.series),
            "-" if study.instances is None else str(study.instances),
            study.cached,
        )
        for study in studies
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"{len(studies)} studies"])


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2)
    out.write("\n")


COMMANDS = {
    "health": cmd_health,
    "destinations": cmd_destinations,
    "plugins": cmd_plugins,
    "load": cmd_load,
    "status": cmd_status,
    "export": cmd_export,
    "failures": cmd_failures,
    "retry": cmd_retry,
    "controls": cmd_controls,
    "audit": cmd_audit,
    "priority": cmd_priority,
    "cancel": cmd_cancel,
    "report": cmd_report,
    "vna": cmd_vna,
}
