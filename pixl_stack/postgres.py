"""A private PostgreSQL cluster run as the `postgres` user (it refuses root).

The `postgres` user must reach the cluster's folder. A checkout may sit where it
cannot: root's home and `mktemp -d` folders are mode 0700. Such a stack keeps
its cluster in a folder of its own under `pg_root()` (/var/lib/pixl/postgres),
named by a hash of the state directory's path, owned by `postgres`, mode 0700,
and linked from `<state dir>/pg`; see `cluster_root`.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from pixl_stack.processes import StackError, port_open, wait_until

PG_BIN = Path(os.environ.get("PIXL_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER_NOTE = "state-dir"  # in an outside cluster folder: the state directory it serves


def pg_root() -> Path:
    """Where the clusters of stacks in closed folders go: PIXL_PG_ROOT, read when used
    (`pixl-stack` reads .env after importing this module)."""
    return Path(os.environ.get("PIXL_PG_ROOT", "/var/lib/pixl/postgres"))


def postgres_can_traverse(folder: Path) -> bool:
    """Whether any user (so `postgres`) may pass through `folder` and all its parents."""
    return all(os.stat(f).st_mode & 0o001 for f in (folder, *folder.parents))


def cluster_root(state_dir: Path) -> Path:
    """Where the cluster of the stack in `state_dir` lives.

    `<state dir>/pg` when `postgres` can reach it, or when a cluster is already
    there; otherwise (a root stack in a closed folder) the state directory's own
    folder under `pg_root()`, which `start()` links from `<state dir>/pg`, so that
    the answer stays the same once the cluster exists.
    """
    local = state_dir / "pg"
    if local.is_symlink():
        return local.resolve()
    existing = next(f for f in (state_dir, *state_dir.parents) if f.exists())
    if os.geteuid() != 0 or (local / "data").exists() or postgres_can_traverse(existing):
        return local
    return pg_root() / hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


class PostgresCluster:
    """A cluster in the folder `root`, or, made by `for_state_dir`, the one of a stack's
    state directory (found again by `cluster_root` on every use)."""

    def __init__(self, root: Path, port: int, state_dir: Path | None = None):
        self._root = root
        self.state_dir = state_dir
        self.port = port

    @classmethod
    def for_state_dir(cls, state_dir: Path, port: int) -> PostgresCluster:
        return cls(state_dir / "pg", port, state_dir)

    @property
    def root(self) -> Path:
        return cluster_root(self.state_dir) if self.state_dir is not None else self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def _as_postgres(self, argv: list[str]) -> subprocess.CompletedProcess:
        command = argv if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *argv]
        # From its own folder: postgres may not be allowed into the caller's working directory.
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)
        if result.returncode != 0:
            raise StackError(
                f"{Path(argv[0]).name} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result

    def _prepare_root(self) -> None:
        root = self.root
        link = self.state_dir / "pg" if self.state_dir is not None else root
        if link != root and not link.is_symlink():
            root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            root.mkdir(mode=0o700, exist_ok=True)
            (root / OWNER_NOTE).write_text(f"{self.state_dir}\n")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root, target_is_directory=True)
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            shutil.chown(root, owner.pw_uid, owner.pw_gid)
            if not postgres_can_traverse(root.parent):
                raise StackError(
                    f"PostgreSQL runs as 'postgres', which cannot reach {root}: make its "
                    "parents world-executable, or move its 'data' folder to a new PIXL_STATE_DIR"
                )

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        self._prepare_root()
        if not self.initialised():
            self._as_postgres([
                str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--locale=C.UTF-8",
            ])
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken by another process; set PIXL_DB_PORT")
        self._as_postgres([
            str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
            "-w", "-t", "60", "-o",
            f"-p {self.port} -k {self.socket_dir} -h 127.0.0.1 -c max_connections=200",
            "start",
        ])
        wait_until(lambda: port_open(self.port), 30, "PostgreSQL to listen")

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def admin_connection(self) -> psycopg.Connection:
        """A superuser connection over the cluster's private unix socket."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres",
            autocommit=True,
        )

    def ensure_role_and_database(self, user: str, password: str, database: str) -> None:
        with self.admin_connection() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(user)
                    )
                )
