"""Reading a destination's settings from the secret store, for the built-in destinations.

Each setting is a secret named `<project.secret_alias>--<service>--<field>`
(PIXL's Key Vault names). A missing one is a `DestinationMisconfigured` that
names the secret; values never appear in messages.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from orthanc_plugins.common.secrets import (
    SecretNotFound,
    SecretsError,
    destination_secret_name,
    find_secret,
)
from pixl_hooks.types import DestinationMisconfigured

# An optional setting of every TLS destination: a PEM certificate (or CA bundle) to
# trust besides the system's, for servers with a private CA or a self-signed certificate.
CA_CERT_FIELD = "ca-cert"


def secret_name(project: Any, service: str, field: str) -> str:
    return destination_secret_name(project.secret_alias, service, field)


def required_setting(secrets: Any, project: Any, service: str, field: str) -> str:
    name = secret_name(project, service, field)
    try:
        return secrets.get(name)
    except SecretNotFound:
        raise DestinationMisconfigured(
            f"project {project.slug}: secret {name!r} is not set"
        ) from None
    except SecretsError as exc:
        raise DestinationMisconfigured(f"project {project.slug}: {exc}") from None


def optional_setting(secrets: Any, project: Any, service: str, field: str) -> str | None:
    try:
        return find_secret(secrets, secret_name(project, service, field))
    except SecretsError as exc:
        raise DestinationMisconfigured(f"project {project.slug}: {exc}") from None


def port_setting(secrets: Any, project: Any, service: str) -> int:
    text = required_setting(secrets, project, service, "port")
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise DestinationMisconfigured(
            f"project {project.slug}: secret {secret_name(project, service, 'port')!r} "
            "must be a port number"
        )
    return int(text)


def missing_settings(secrets: Any, project: Any, service: str, fields: Sequence[str]) -> list[str]:
    """Problems for `pixl_check_destination`: one sentence per secret that is not set."""
    problems = []
    for field in fields:
        name = secret_name(project, service, field)
        try:
            if find_secret(secrets, name) is None:
                problems.append(f"secret {name!r} is not set")
        except SecretsError as exc:
            problems.append(str(exc))
    return problems


@contextmanager
def trusted_certificates(pem: str | None) -> Iterator[str | bool]:
    """`verify` for requests: a temporary CA file holding `pem`, or True for the system's CAs."""
    if not pem:
        yield True
        return
    fd, path = tempfile.mkstemp(prefix="pixl-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(pem)
        yield path
    finally:
        os.unlink(path)
