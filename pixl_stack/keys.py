"""`pixl-keys`: raw's and anon's users, and a backup of the projects' keys.

    pixl-keys users                         list users and roles
    pixl-keys user-set NAME ROLE            add or change a user (password on stdin)
    pixl-keys user-remove NAME
    pixl-keys backup FILE [PROJECT ...]     the projects' pseudonymisation keys, to FILE (0600)
    pixl-keys restore FILE [--replace]      put them back into the secret store

Works on the secret store of the PIXL settings (PIXL_SECRETS_BACKEND). A lost or
replaced project key means new pseudonyms for the same people (SECURITY.md):
`restore` refuses to overwrite a different key unless told to.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path

from orthanc_plugins.common.access import HUMAN_ROLES, load_users, remove_user, set_user
from orthanc_plugins.common.projects import load_all_projects
from orthanc_plugins.common.secrets import SecretsError, SecretStore, find_secret, open_secret_store
from orthanc_plugins.common.settings import load_env_file, load_settings

BACKUP_FORMAT = "pixl-project-keys-1"
_KEY = re.compile(r"^[0-9a-f]{64}$")


class KeysError(RuntimeError):
    """What was asked cannot be done; the message names the file or project, never a key."""


def backup_keys(store: SecretStore, projects: list[str], out: Path) -> list[str]:
    """Write the keys of `projects` that exist to `out` (never overwritten). Returns their slugs."""
    keys = {slug: key for slug in projects if (key := find_secret(store, slug)) is not None}
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeysError(f"{out} exists: choose a new file for the backup") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"format": BACKUP_FORMAT, "keys": keys}, handle, indent=2, sort_keys=True)
    return sorted(keys)


def restore_keys(store: SecretStore, backup: Path, *, replace: bool = False) -> dict[str, str]:
    """Put a backup's keys into the store: {slug: "restored" | "unchanged" | "replaced"}.
    Nothing is written when any project holds a different key and `replace` is off."""
    try:
        data = json.loads(backup.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KeysError(f"{backup}: not a readable key backup ({type(exc).__name__})") from None
    keys = data.get("keys") if isinstance(data, dict) and data.get("format") == BACKUP_FORMAT else None
    if not isinstance(keys, dict):
        raise KeysError(f"{backup}: not a {BACKUP_FORMAT} backup")
    bad = sorted(slug for slug, key in keys.items() if not isinstance(key, str) or not _KEY.match(key))
    if bad:
        raise KeysError(f"{backup}: the key of project {bad[0]!r} is not 64 hexadecimal characters")
    outcome = {}
    for slug, key in keys.items():
        current = find_secret(store, slug)
        outcome[slug] = "restored" if current is None else "unchanged" if current == key else "replaced"
    different = sorted(slug for slug, what in outcome.items() if what == "replaced")
    if different and not replace:
        raise KeysError(
            f"project {different[0]!r} already has a different key: restoring would give its "
            "patients new pseudonyms; use --replace if that key is the wrong one"
        )
    for slug, what in outcome.items():
        if what != "unchanged":
            store.set(slug, keys[slug])
    return outcome


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise KeysError("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixl-keys", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("users", help="list users and roles")
    user_set = commands.add_parser("user-set", help="add or change a user (password on stdin)")
    user_set.add_argument("name")
    user_set.add_argument("role", choices=HUMAN_ROLES)
    user_remove = commands.add_parser("user-remove", help="remove a user")
    user_remove.add_argument("name")
    backup = commands.add_parser("backup", help="write the projects' keys to a new file")
    backup.add_argument("file", type=Path)
    backup.add_argument("projects", nargs="*", help="project slugs (default: every project)")
    restore = commands.add_parser("restore", help="put a backup's keys into the secret store")
    restore.add_argument("file", type=Path)
    restore.add_argument("--replace", action="store_true", help="overwrite a different key")
    args = parser.parse_args(argv)

    load_env_file()
    settings = load_settings()
    try:
        store = open_secret_store(settings)
        if args.command == "users":
            for user in sorted(load_users(store).values(), key=lambda u: u.name):
                print(f"{user.name}\t{user.role}")
        elif args.command == "user-set":
            set_user(store, args.name, args.role, _read_password())
            print(f"user {args.name} is {args.role} (raw and anon know it within 10 s)")
        elif args.command == "user-remove":
            if not remove_user(store, args.name):
                raise KeysError(f"no user {args.name!r}")
            print(f"user {args.name} removed (refused within a minute)")
        elif args.command == "backup":
            projects = args.projects or sorted(load_all_projects(settings.projects_dir, settings.tag_rules_dir))
            saved = backup_keys(store, projects, args.file)
            print(f"{len(saved)} project keys written to {args.file}: {', '.join(saved) or '-'}")
        elif args.command == "restore":
            for slug, what in sorted(restore_keys(store, args.file, replace=args.replace).items()):
                print(f"{slug}\t{what}")
    except (KeysError, SecretsError, ValueError) as exc:
        print(f"pixl-keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
