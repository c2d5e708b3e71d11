"""Destinations `ftps` (implicit TLS) and `ftpes` (explicit TLS: AUTH TLS), as in PIXL.

Both protect the data connections too (PROT P). Layout on the server as in PIXL
(`_layout`): `<project slug>/<pseudonymised study UID>.zip`, and the parquet
export under `<project slug>/<extract>/parquet/`.

Settings (secrets, see `_settings`): `<alias>--ftp--host`, `--ftp--port`,
`--ftp--username`, `--ftp--password`, and optionally `--ftp--ca-cert` (PEM of
the server's certificate or CA when the system does not already trust it).
The server's certificate is always verified.

Nothing appears half-written (see `_layout`); repeating an export replaces the
previous copy.
"""

from __future__ import annotations

import ftplib
import logging
import posixpath
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pixl_hooks.destinations import _layout
from pixl_hooks.destinations._settings import (
    CA_CERT_FIELD,
    missing_settings,
    optional_setting,
    port_setting,
    required_setting,
)
from pixl_hooks.hookspecs import hookimpl
from pixl_hooks.types import (
    DestinationInfo,
    DestinationMisconfigured,
    DestinationRejected,
    DestinationUnavailable,
    ExportReceipt,
    settings_problems,
)

logger = logging.getLogger(__name__)

NAME = "ftps"  # TLS from the first byte (PIXL's FTPSUploader)
EXPLICIT_NAME = "ftpes"  # plain connection upgraded by AUTH TLS (PIXL's FTPESUploader)
NAMES = (NAME, EXPLICIT_NAME)
SERVICE = "ftp"  # PIXL's secret names say "ftp", for both
REQUIRED_FIELDS = ("host", "port", "username", "password")
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class FtpsSettings:
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    ca_cert: str | None = field(default=None, repr=False)


def read_settings(secrets: Any, project: Any) -> FtpsSettings:
    return FtpsSettings(
        host=required_setting(secrets, project, SERVICE, "host"),
        port=port_setting(secrets, project, SERVICE),
        username=required_setting(secrets, project, SERVICE, "username"),
        password=required_setting(secrets, project, SERVICE, "password"),
        ca_cert=optional_setting(secrets, project, SERVICE, CA_CERT_FIELD),
    )


@hookimpl
def pixl_destinations():
    return [
        DestinationInfo(NAME, dicom=True, parquet=True,
                        description="FTPS server, implicit TLS: study zips and parquet"),
        DestinationInfo(EXPLICIT_NAME, dicom=True, parquet=True,
                        description="FTPS server, explicit TLS (AUTH TLS): study zips and parquet"),
    ]


@hookimpl
def pixl_check_destination(project, destination_name, secrets):
    if destination_name not in NAMES:
        return None
    return missing_settings(secrets, project, SERVICE, REQUIRED_FIELDS) or settings_problems(
        read_settings, secrets, project
    )


@hookimpl
def pixl_export_dicom_study(project, destination_name, study, secrets):
    if destination_name not in NAMES:
        return None
    settings = read_settings(secrets, project)
    remote_name = _layout.study_zip_name(study)
    with connect(settings, project.slug, implicit=destination_name == NAME) as ftp, ftp_errors(project.slug, "upload of a study"):
        enter_folder(ftp, project.slug, create=True)
        # One name per study: an upload cut short is overwritten by the next try (the
        # job's lease keeps two tries of one study from ever running at once).
        with study.zip_path.open("rb") as handle:
            ftp.storbinary(f"STOR {_layout.partial_name(remote_name)}", handle)
        replace_file(ftp, _layout.partial_name(remote_name), remote_name)
    logger.info("sent study %s of %s to FTPS", study.pseudo_study_uid, project.slug)
    return ExportReceipt(destination_name, location=f"{project.slug}/{remote_name}",
                         files=len(study.instance_names()))


@hookimpl
def pixl_export_parquet(project, destination_name, extract_name, parquet_dir, secrets):
    if destination_name not in NAMES:
        return None
    settings = read_settings(secrets, project)
    files = _layout.parquet_files(parquet_dir)
    partial = _layout.PARTIAL_PARQUET_FOLDER
    with (connect(settings, project.slug, implicit=destination_name == NAME) as ftp,
          ftp_errors(project.slug, "parquet upload")):
        enter_folder(ftp, _layout.extract_folder(project.slug, extract_name), create=True)
        base = ftp.pwd()
        remove_tree(ftp, partial)  # left by an interrupted run
        for path, relative in files:
            ftp.cwd(base)
            enter_folder(ftp, posixpath.join(partial, posixpath.dirname(relative)), create=True)
            with path.open("rb") as handle:
                ftp.storbinary(f"STOR {path.name}", handle)
        ftp.cwd(base)
        _layout.replace_folder(partial, _layout.PARQUET_FOLDER, exists=lambda name: _exists(ftp, name),
                               rename=ftp.rename, remove_tree=lambda name: remove_tree(ftp, name))
    location = _layout.parquet_location(project.slug, extract_name)
    logger.info("sent %d parquet files of %s to FTPS %s", len(files), project.slug, location)
    return ExportReceipt(destination_name, location=location, files=len(files))


# --- FTP plumbing -----------------------------------------------------------------------------


class ImplicitFtpTls(ftplib.FTP_TLS):
    """FTP_TLS whose control connection is TLS from the first byte (implicit FTPS).

    `login` then sees a TLS socket and sends no AUTH TLS; data connections are
    wrapped by FTP_TLS as usual once PROT P is set.
    """

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        raw = socket.create_connection((host, port), self.timeout, source_address=source_address)
        try:
            self.sock = self.context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


@contextmanager
def connect(settings: FtpsSettings, project_slug: str, *, implicit: bool) -> Iterator[ftplib.FTP_TLS]:
    """A logged-in FTPS session with a private data channel; errors become DestinationErrors."""
    context = ssl.create_default_context(cadata=settings.ca_cert or None)
    kind = ImplicitFtpTls if implicit else ftplib.FTP_TLS
    ftp = kind(context=context, timeout=TIMEOUT_SECONDS)
    try:
        with ftp_errors(project_slug, "connection"):
            ftp.connect(settings.host, settings.port)
            ftp.login(settings.username, settings.password)  # explicit: sends AUTH TLS first
            ftp.prot_p()
        yield ftp
    finally:
        _close(ftp)


@contextmanager
def ftp_errors(project_slug: str, doing: str) -> Iterator[None]:
    """Translate ftplib/socket errors; messages carry no host, user or password."""
    what = f"FTPS {doing} for project {project_slug}"
    try:
        yield
    except ssl.SSLCertVerificationError:
        raise DestinationMisconfigured(
            f"{what}: the server's certificate is not trusted (set secret "
            f"'<alias>--ftp--{CA_CERT_FIELD}' to its certificate or CA)"
        ) from None
    except ftplib.error_perm as exc:
        code = str(exc)[:3]
        if code == "530":
            raise DestinationRejected(f"{what}: login refused (530)") from None
        raise DestinationRejected(f"{what}: refused by the server ({code})") from None
    except ftplib.error_temp as exc:
        raise DestinationUnavailable(f"{what}: temporary failure ({str(exc)[:3]})") from None
    except (OSError, EOFError, ftplib.Error) as exc:
        raise DestinationUnavailable(f"{what}: server unreachable ({type(exc).__name__})") from None


def _close(ftp: ftplib.FTP_TLS) -> None:
    if ftp.sock is None:  # never connected
        return
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        ftp.close()


def enter_folder(ftp: ftplib.FTP, path: str, *, create: bool) -> None:
    """cwd into a relative path, making each missing folder (like mkdir -p)."""
    for part in [part for part in path.split("/") if part and part != "."]:
        try:
            ftp.cwd(part)
        except ftplib.error_perm:
            if not create:
                raise
            try:
                ftp.mkd(part)
            except ftplib.error_perm:
                pass  # made meanwhile by another upload: the cwd below tells
            ftp.cwd(part)


def _exists(ftp: ftplib.FTP, name: str) -> bool:
    try:
        listing = ftp.nlst()
    except ftplib.error_perm:  # some servers answer 550 for an empty folder
        listing = []
    return name in {posixpath.basename(entry) for entry in listing}


def replace_file(ftp: ftplib.FTP, source: str, target: str) -> None:
    """Rename source to target, replacing target (some servers refuse to rename over a file)."""
    if _exists(ftp, target):
        ftp.delete(target)
    ftp.rename(source, target)


def remove_tree(ftp: ftplib.FTP, name: str) -> None:
    """Delete a folder and everything in it, if it exists (uses MLSD listings)."""
    if not _exists(ftp, name):
        return
    ftp.cwd(name)
    for entry, facts in list(ftp.mlsd()):
        if entry in (".", "..") or facts.get("type") in ("cdir", "pdir"):
            continue
        if facts.get("type") == "dir":
            remove_tree(ftp, entry)
        else:
            ftp.delete(entry)
    ftp.cwd("..")
    ftp.rmd(name)
