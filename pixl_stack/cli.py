"""`pixl-stack up | down | status | logs`: the native stack, no Docker."""

from __future__ import annotations

import argparse
import sys

from orthanc_plugins.common.settings import load_env_file, load_settings
from pixl_stack.processes import StackError
from pixl_stack.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixl-stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start every server that is not running; wait until healthy")
    commands.add_parser("down", help="stop every server by its recorded PID")
    commands.add_parser("status", help="show what runs; exit 1 if anything crashed")
    logs = commands.add_parser("logs", help="print the end of a server's log")
    logs.add_argument("server", choices=["postgres", "vna", "raw", "anon", "dicomweb", "ftps",
                                         "raw-tls", "anon-tls"])
    logs.add_argument("-n", "--lines", type=int, default=50)
    args = parser.parse_args(argv)

    load_env_file()
    stack = Stack(load_settings())
    try:
        if args.command == "up":
            stack.up()
            _print_status(stack)
        elif args.command == "down":
            stack.down()
            print("stack stopped")
        elif args.command == "status":
            return 1 if _print_status(stack) else 0
        elif args.command == "logs":
            log = stack.postgres.log_file if args.server == "postgres" else stack.log_dir / f"{args.server}.log"
            if not log.exists():  # servers that log to their standard output (ftps)
                log = log.with_suffix(".out")
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            print("\n".join(lines[-args.lines:]))
    except StackError as exc:
        print(f"pixl-stack: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(stack: Stack) -> bool:
    """Print one line per server; True if any crashed."""
    crashed = False
    for status in stack.status():
        crashed |= status.state == "crashed"
        pid = status.pid if status.pid is not None else "-"
        print(f"{status.name:<10} {status.state:<8} pid={pid:<8} {status.detail}")
    return crashed


if __name__ == "__main__":
    sys.exit(main())
