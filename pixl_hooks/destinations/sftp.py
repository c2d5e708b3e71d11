"""Destination `sftp`: study zips and the parquet export on an SSH server (paramiko).

The layout is FTPS's (`_layout`): `<project slug>/<pseudonymised study UID>.zip`
and `<project slug>/<extract>/parquet/...`, relative to the folder the server
starts the session in, and nothing appears half-written: a study goes up as
`<uid>.zip.part` and is renamed over the final name (the OpenSSH
`posix-rename` extension, atomic); the parquet tree goes up into
`parquet.partial` and takes the place of `parquet` when complete. Sending a
study again replaces it: success, not a conflict.

Settings (secrets `<alias>--sftp--<field>`): `host`, `port`, `username`, one of
`password` or `private-key` (an unencrypted OpenSSH or PEM private key), and
`host-key`: the server's public host key, as a `known_hosts` or `ssh-keyscan`
line or a `.pub` file's line (several lines for several key types). The host
key is always verified; an unknown or different key is refused before
anything is sent, never accepted.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paramiko

from pixl_hooks.destinations import _layout
from pixl_hooks.destinations._settings import (
    missing_settings,
    optional_setting,
    port_setting,
    required_setting,
    secret_name,
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

NAME = "sftp"
SERVICE = "sftp"
REQUIRED_FIELDS = ("host", "port", "username", "host-key")
TIMEOUT_SECONDS = 60
# Key types paramiko can load from the `private-key` secret, most likely first.
_PRIVATE_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


@dataclass(frozen=True)
class SftpSettings:
    host: str
    port: int
    username: str
    host_keys: tuple[paramiko.PKey, ...] = field(repr=False)
    password: str | None = field(default=None, repr=False)
    private_key: paramiko.PKey | None = field(default=None, repr=False)


def read_settings(secrets: Any, project: Any) -> SftpSettings:
    password = optional_setting(secrets, project, SERVICE, "password")
    key_text = optional_setting(secrets, project, SERVICE, "private-key")
    if (password is None) == (key_text is None):
        raise DestinationMisconfigured(
            f"project {project.slug}: set exactly one of secrets "
            f"{secret_name(project, SERVICE, 'password')!r} and "
            f"{secret_name(project, SERVICE, 'private-key')!r}"
        )
    return SftpSettings(
        host=required_setting(secrets, project, SERVICE, "host"),
        port=port_setting(secrets, project, SERVICE),
        username=required_setting(secrets, project, SERVICE, "username"),
        host_keys=parse_host_keys(required_setting(secrets, project, SERVICE, "host-key"),
                                  secret_name(project, SERVICE, "host-key")),
        password=password,
        private_key=None if key_text is None else parse_private_key(
            key_text, secret_name(project, SERVICE, "private-key")),
    )


def parse_host_keys(text: str, where: str) -> tuple[paramiko.PKey, ...]:
    """Public keys from known_hosts, ssh-keyscan or .pub lines (`[host] type base64 [comment]`)."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith("@"):  # @revoked or @cert-authority: a key NOT to trust as is
            raise DestinationMisconfigured(
                f"secret {where!r}, line {number}: {words[0]} lines are not supported; "
                "give the server's own public key")
        start = next((i for i, word in enumerate(words) if word.startswith(("ssh-", "ecdsa-"))), None)
        if start is None or start + 1 >= len(words):
            raise DestinationMisconfigured(
                f"secret {where!r}, line {number}: not a public key (expected 'TYPE BASE64')")
        try:
            keys.append(paramiko.PKey.from_type_string(words[start],
                                                       base64.b64decode(words[start + 1])))
        except (binascii.Error, paramiko.SSHException, ValueError) as exc:
            raise DestinationMisconfigured(
                f"secret {where!r}, line {number}: unreadable {words[start]} key "
                f"({type(exc).__name__})") from None
    if not keys:
        raise DestinationMisconfigured(f"secret {where!r} holds no public key")
    return tuple(keys)


def parse_private_key(text: str, where: str) -> paramiko.PKey:
    for key_type in _PRIVATE_KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise DestinationMisconfigured(
        f"secret {where!r} is not an unencrypted Ed25519, ECDSA or RSA private key")


@hookimpl
def pixl_destinations():
    return [DestinationInfo(NAME, dicom=True, parquet=True,
                            description="SFTP server (host key verified): study zips and parquet")]


@hookimpl
def pixl_check_destination(project, destination_name, secrets):
    if destination_name != NAME:
        return None
    return missing_settings(secrets, project, SERVICE, REQUIRED_FIELDS) or settings_problems(
        read_settings, secrets, project
    )


@hookimpl
def pixl_export_dicom_study(project, destination_name, study, secrets):
    if destination_name != NAME:
        return None
    settings = read_settings(secrets, project)
    name = _layout.study_zip_name(study)
    with connect(settings, project.slug) as sftp, sftp_errors(project.slug, "upload of a study"):
        make_folders(sftp, project.slug)
        target = posixpath.join(project.slug, name)
        sftp.put(str(study.zip_path), _layout.partial_name(target), confirm=True)
        sftp.posix_rename(_layout.partial_name(target), target)
    logger.info("sent study %s of %s to SFTP", study.pseudo_study_uid, project.slug)
    return ExportReceipt(NAME, location=f"{project.slug}/{name}", files=len(study.instance_names()))


@hookimpl
def pixl_export_parquet(project, destination_name, extract_name, parquet_dir, secrets):
    if destination_name != NAME:
        return None
    settings = read_settings(secrets, project)
    files = _layout.parquet_files(parquet_dir)
    base = _layout.extract_folder(project.slug, extract_name)
    partial = posixpath.join(base, _layout.PARTIAL_PARQUET_FOLDER)
    with connect(settings, project.slug) as sftp, sftp_errors(project.slug, "parquet upload"):
        make_folders(sftp, base)
        remove_tree(sftp, partial)  # left by an interrupted run
        for path, relative in files:
            make_folders(sftp, posixpath.join(partial, posixpath.dirname(relative)))
            sftp.put(str(path), posixpath.join(partial, relative), confirm=True)
        sftp.chdir(base)
        _layout.replace_folder(_layout.PARTIAL_PARQUET_FOLDER, _layout.PARQUET_FOLDER,
                               exists=lambda name: _exists(sftp, name), rename=sftp.posix_rename,
                               remove_tree=lambda name: remove_tree(sftp, name))
    location = _layout.parquet_location(project.slug, extract_name)
    logger.info("sent %d parquet files of %s to SFTP %s", len(files), project.slug, location)
    return ExportReceipt(NAME, location=location, files=len(files))


# --- SSH plumbing -----------------------------------------------------------------------------


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """The server offered a key of a type the `host-key` secret has none of: refuse."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(key.get_name())


class _UnknownHostKey(paramiko.SSHException):
    pass


@contextmanager
def connect(settings: SftpSettings, project_slug: str) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session on a server whose host key is the configured one; errors become
    DestinationErrors that name no host, user or key."""
    client = paramiko.SSHClient()
    # The name paramiko looks the server up by: "[host]:port" unless the port is 22.
    known_as = settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"
    for key in settings.host_keys:
        client.get_host_keys().add(known_as, key.get_name(), key)
    client.set_missing_host_key_policy(_RefuseUnknownHostKey())
    try:
        with sftp_errors(project_slug, "connection"):
            client.connect(
                settings.host, settings.port, username=settings.username,
                password=settings.password, pkey=settings.private_key,
                allow_agent=False, look_for_keys=False, timeout=TIMEOUT_SECONDS,
                banner_timeout=TIMEOUT_SECONDS, auth_timeout=TIMEOUT_SECONDS,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(TIMEOUT_SECONDS)
        yield sftp
    finally:
        client.close()


@contextmanager
def sftp_errors(project_slug: str, doing: str) -> Iterator[None]:
    what = f"SFTP {doing} for project {project_slug}"
    key_secret = f"'<alias>--{SERVICE}--host-key'"
    try:
        yield
    except paramiko.BadHostKeyException:
        raise DestinationMisconfigured(
            f"{what}: the server's host key differs from secret {key_secret}; refused "
            "(a changed server or someone in between: check before changing the secret)"
        ) from None
    except _UnknownHostKey as exc:
        raise DestinationMisconfigured(
            f"{what}: the server offered a {exc} host key and secret {key_secret} has none "
            "of that type; refused") from None
    except paramiko.ssh_exception.IncompatiblePeer:
        raise DestinationMisconfigured(
            f"{what}: the server has no host key of the types in secret {key_secret}") from None
    except paramiko.AuthenticationException:
        raise DestinationRejected(f"{what}: login refused") from None
    except PermissionError:
        raise DestinationRejected(f"{what}: permission denied by the server") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise DestinationUnavailable(f"{what}: server unreachable ({type(exc).__name__})") from None


def make_folders(sftp: paramiko.SFTPClient, path: str) -> None:
    """mkdir -p of a relative path."""
    current = ""
    for part in [part for part in path.split("/") if part and part != "."]:
        current = posixpath.join(current, part)
        if not _exists(sftp, current):
            sftp.mkdir(current)


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def remove_tree(sftp: paramiko.SFTPClient, path: str) -> None:
    """Delete a folder and everything in it, if it exists."""
    try:
        entries = sftp.listdir_attr(path)
    except FileNotFoundError:
        return
    for entry in entries:
        child = posixpath.join(path, entry.filename)
        if stat.S_ISDIR(entry.st_mode or 0):
            remove_tree(sftp, child)
        else:
            sftp.remove(child)
    sftp.rmdir(path)
