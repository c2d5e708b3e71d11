"""Container entry point of the PIXL Orthanc image: `entrypoint.py raw|anon`.

Renders this node's Orthanc configuration from the environment (the compose
file's `env_file` plus its container addresses) with the same renderer as the
native stack, makes sure the node's Orthanc index database exists and the
deployment's first admin (ORTHANC_USERNAME) is a user, starts the node's HTTPS
front (stunnel, as in the native stack), then replaces itself with Orthanc so
that Orthanc is PID 1 and receives the container's stop signal (the front,
its child, ends with the container).

`entrypoint.py tls` (compose's one-shot `pixl-tls` service, before any server)
makes sure the deployment has one certificate and the CA that signed it: the
operator's (secret store or files), else a CA of the deployment's own and a
certificate for every container's name, on the shared state volume. Every
front serves that certificate; anon, the health checks and pixl-tui verify it
with that CA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from orthanc_plugins.common.access import ensure_admin
from orthanc_plugins.common.secrets import check_secret_file, open_secret_store
from orthanc_plugins.common.settings import Settings, load_settings
from pixl_stack.certs import tls_material
from pixl_stack.render import render_config, render_tls_front

NODES = ("raw", "anon")
TLS_COMMAND = "tls"
CONFIG_PATH = Path("/etc/orthanc/orthanc.json")
STORAGE_DIR = Path("/var/lib/orthanc/db")
ORTHANC = "/usr/sbin/Orthanc"
STUNNEL = "/usr/bin/stunnel4"
TLS_FRONT_CONFIG = Path("/etc/orthanc/tls-front.conf")


def render_node_config(
    node: str, settings: Settings, out: Path, storage_dir: Path
) -> dict[str, Any]:
    """Write the Orthanc configuration of `node` to `out` (readable by its owner only)."""
    if node not in NODES:
        raise SystemExit(f"entrypoint: node must be one of {', '.join(NODES)}, got {node!r}")
    config = render_config(node, settings, getattr(settings, node), storage_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The configuration holds the Orthanc and PostgreSQL passwords.
    out.touch(mode=0o600, exist_ok=True)
    out.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return config


def ensure_index_database(settings: Settings, config: dict[str, Any]) -> None:
    """Create the Orthanc PostgreSQL index database if the configuration uses one."""
    index = config.get("PostgreSQL") or {}
    if not index.get("EnableIndex"):
        return
    database = index["Database"]
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def start_tls_front(settings: Settings, node: str, store) -> None:
    """stunnel on the published port, in front of Orthanc on the loopback interface."""
    certfile, keyfile = tls_material(settings, store)
    TLS_FRONT_CONFIG.write_text(render_tls_front(getattr(settings, node), certfile, keyfile))
    subprocess.Popen([STUNNEL, str(TLS_FRONT_CONFIG)], stdin=subprocess.DEVNULL)


def prepare_tls(settings: Settings) -> None:
    check_secret_file(settings)
    certfile, _ = tls_material(settings, open_secret_store(settings))
    print(f"entrypoint: HTTPS certificate {certfile}, clients verify it with "
          f"{settings.tls_ca_bundle}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    node = argv[1] if len(argv) > 1 else ""
    settings = load_settings()
    if node == TLS_COMMAND:
        prepare_tls(settings)
        return
    config = render_node_config(node, settings, CONFIG_PATH, STORAGE_DIR)
    ensure_index_database(settings, config)
    check_secret_file(settings)
    store = open_secret_store(settings)
    try:
        ensure_admin(store, settings)
    except ValueError as exc:
        raise SystemExit(f"entrypoint: ORTHANC_USERNAME / ORTHANC_PASSWORD: {exc}") from None
    if getattr(settings, node).tls:
        start_tls_front(settings, node, store)
    print(f"entrypoint: starting Orthanc as PIXL {node}", file=sys.stderr, flush=True)
    os.execv(ORTHANC, [ORTHANC, str(CONFIG_PATH)])


if __name__ == "__main__":
    main(sys.argv)
