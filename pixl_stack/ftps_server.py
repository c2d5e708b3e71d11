"""A small FTPS server (pyftpdlib) for the demo and the tests.

    python -m pixl_stack.ftps_server --host 127.0.0.1 --port P --root DIR \\
        --user U --password-file F --certfile C [--keyfile K] [--tls implicit|explicit]

One user, whose home is DIR. TLS is required on both the control and the
data connections: implicit TLS (TLS from the first byte, what PIXL's `ftps`
destination speaks; the default) or explicit (AUTH TLS, PIXL's `ftpes`).
`pixl_stack.certs.make_self_signed_cert` makes a certificate for it; the client trusts it
through the project's `<alias>--ftp--ca-cert` secret.

With `--upload-log FILE` the server appends one JSON line per completed upload
(`received`), per upload cut short (`incomplete`: the client aborted or went
away) and per rename (`renamed`), each with the path under the root and the
bytes on disk, so that tests count what the destination really received,
duplicates included (`read_upload_log`). Each line is flushed as it happens,
so it survives the server being killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# elr: list and read; a: append; d: delete; f: rename; m: mkdir; w: write; M: chmod; T: mtime
USER_PERMISSIONS = "elradfmwMT"


TLS_MODES = ("implicit", "explicit")


@dataclass(frozen=True)
class UploadRecord:
    """One line of the upload log: `received`, `incomplete` or `renamed` (then `path` is
    the new name and `source` the old one)."""

    event: str
    path: str
    bytes: int
    source: str | None = None


class UploadLog:
    """Appends `UploadRecord`s as JSON lines, one flushed write per event."""

    def __init__(self, path: Path, root: Path):
        self.path = Path(path)
        self.root = Path(root).resolve()
        self._lock = threading.Lock()

    def write(self, event: str, file: str, *, source: str | None = None) -> None:
        record = {"event": event, "path": self._relative(file),
                  "bytes": os.path.getsize(file) if os.path.isfile(file) else 0}
        if source is not None:
            record["source"] = self._relative(source)
        line = json.dumps(record) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)

    def _relative(self, file: str) -> str:
        return Path(file).resolve().relative_to(self.root).as_posix()


def read_upload_log(path: Path) -> list[UploadRecord]:
    """The records of an upload log, oldest first (none if the server wrote none yet).

    A last line cut short by a kill of the server is left out."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(UploadRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return records


def build_server(
    host: str, port: int, root: Path, user: str, password: str, certfile: Path, keyfile: Path,
    tls: str = "implicit", upload_log: Path | None = None,
):
    """A pyftpdlib server, not yet serving (call `serve_forever()`)."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm=USER_PERMISSIONS)
    log = UploadLog(upload_log, root) if upload_log else None

    class LoggedFS(AbstractedFS):
        def rename(self, src, dst):
            super().rename(src, dst)
            if log:
                log.write("renamed", dst, source=src)

    # A subclass, so that settings stay with this server and not on the shared class.
    class Handler(TLS_FTPHandler):
        abstracted_fs = LoggedFS

        def on_file_received(self, file):
            if log:
                log.write("received", file)

        def on_incomplete_file_received(self, file):
            if log:
                log.write("incomplete", file)

    Handler.authorizer = authorizer
    Handler.certfile = str(certfile)
    Handler.keyfile = str(keyfile)
    Handler.tls_control_required = True
    Handler.tls_data_required = True
    Handler.passive_ports = None  # any free port
    Handler.banner = "PIXL FTPS server"
    if tls == "explicit":
        return FTPServer((host, port), Handler)

    class ImplicitHandler(Handler):
        """TLS from the first byte; the banner is sent once the handshake is done."""

        def handle(self):
            self.secure_connection(self.ssl_context)

        def handle_ssl_established(self):
            super().handle()

    return FTPServer((host, port), ImplicitHandler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixl_stack.ftps_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True, help="the user's home folder")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True,
                        help="file holding the password (its first line)")
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, help="defaults to the certfile (a combined PEM)")
    parser.add_argument("--tls", choices=TLS_MODES, default="implicit",
                        help="implicit (destination ftps, the default) or explicit (ftpes)")
    parser.add_argument("--upload-log", type=Path,
                        help="append a JSON line per completed, cut-short and renamed upload")
    arguments = parser.parse_args(argv)

    lines = arguments.password_file.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0]:
        parser.error(f"password file {arguments.password_file} is empty")
    arguments.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = build_server(
        arguments.host, arguments.port, arguments.root, arguments.user, lines[0],
        arguments.certfile, arguments.keyfile or arguments.certfile, arguments.tls,
        arguments.upload_log,
    )
    logger.info("FTPS server (%s TLS) on %s:%d serving %s",
                arguments.tls, arguments.host, arguments.port, arguments.root)
    try:
        server.serve_forever()
    finally:
        server.close_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
