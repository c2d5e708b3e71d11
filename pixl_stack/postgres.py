"""A private PostgreSQL cluster run as the `postgres` user (it refuses root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from pixl_stack.processes import StackError, port_open, wait_until

PG_BIN = Path(os.environ.get("PIXL_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresCluster:
    def __init__(self, root: Path, port: int):
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root
        self.log_file = root / "server.log"
        self.port = port

    def _as_postgres(self, argv: list[str]) -> subprocess.CompletedProcess:
        command = argv if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(
                f"{Path(argv[0]).name} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            shutil.chown(self.root, owner.pw_uid, owner.pw_gid)
            for parent in self.root.parents:
                if not os.stat(parent).st_mode & 0o001:
                    raise StackError(
                        f"PostgreSQL runs as 'postgres', which cannot traverse {parent}; "
                        "choose a PIXL_STATE_DIR whose parents are world-executable"
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
