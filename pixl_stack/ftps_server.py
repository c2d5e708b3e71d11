"""A small FTPS server (pyftpdlib) for the demo and the tests.

    python -m pixl_stack.ftps_server --host 127.0.0.1 --port P --root DIR \\
        --user U --password-file F --certfile C [--keyfile K] [--tls implicit|explicit]

One user, whose home is DIR. TLS is required on both the control and the
data connections: implicit TLS (TLS from the first byte, what PIXL's `ftps`
destination speaks; the default) or explicit (AUTH TLS, PIXL's `ftpes`).
`pixl_stack.certs.make_self_signed_cert` makes a certificate for it; the client trusts it
through the project's `<alias>--ftp--ca-cert` secret.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# elr: list and read; a: append; d: delete; f: rename; m: mkdir; w: write; M: chmod; T: mtime
USER_PERMISSIONS = "elradfmwMT"


TLS_MODES = ("implicit", "explicit")


def build_server(
    host: str, port: int, root: Path, user: str, password: str, certfile: Path, keyfile: Path,
    tls: str = "implicit",
):
    """A pyftpdlib server, not yet serving (call `serve_forever()`)."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm=USER_PERMISSIONS)

    # A subclass, so that settings stay with this server and not on the shared class.
    class Handler(TLS_FTPHandler):
        pass

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
    arguments = parser.parse_args(argv)

    lines = arguments.password_file.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0]:
        parser.error(f"password file {arguments.password_file} is empty")
    arguments.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = build_server(
        arguments.host, arguments.port, arguments.root, arguments.user, lines[0],
        arguments.certfile, arguments.keyfile or arguments.certfile, arguments.tls,
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
