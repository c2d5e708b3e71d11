"""Secrets behind one interface: a local file, environment variables, or Azure Key Vault.

Secret names follow PIXL's Key Vault conventions, so an existing vault works
unchanged:

- destination settings: `<alias>--<service>--<field>`, where `<alias>` is the
  project's `azure_kv_alias` or else its slug (`ProjectConfig.secret_alias`),
  e.g. `test--ftp--host`, `test--ftp--port`, `test--ftp--username`,
  `test--ftp--password`, `test--dicomweb--url`, `test--xnat--password`;
- a project's pseudonymisation key: the project slug itself (PIXL's hasher
  stores each project's salt under the project name), made on first use and
  kept, see `project_key`.

Values are never logged and never put in error messages: errors name the
secret, never its value. `settings.secrets_backend` chooses the backend:
"file" (the default, for the demo), "env" or "azure".
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets as random_source
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from orthanc_plugins.common.settings import Settings

logger = logging.getLogger(__name__)

SECRETS_BACKENDS = ("file", "env", "azure")
ENV_PREFIX = "PIXL_SECRET_"
# Azure Key Vault allows 1-127 characters of letters, digits and dashes; keeping every
# backend to the same rule means a name that works in the demo works in the vault.
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


class SecretsError(RuntimeError):
    """A secret could not be read or stored. The message names the secret, never its value."""


class SecretNotFound(SecretsError, KeyError):
    """The store holds no secret of this name."""

    def __init__(self, name: str, hint: str = "") -> None:
        self.name = name
        super().__init__(f"secret {name!r} not found{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message again
        return str(self.args[0])


class SecretStore(Protocol):
    """What PIXL needs from a secret backend."""

    def get(self, name: str) -> str:
        """The value of secret `name`; `SecretNotFound` if there is none."""
        ...

    def set(self, name: str, value: str) -> None:
        """Store `value` under `name`, replacing any previous value."""
        ...


def check_secret_name(name: str) -> str:
    if not _SECRET_NAME.match(name):
        raise SecretsError(
            f"invalid secret name {name!r}: use 1-127 letters, digits and dashes"
        )
    return name


def destination_secret_name(alias: str, service: str, field: str) -> str:
    """PIXL's name for a destination setting, e.g. ("test", "ftp", "host") -> "test--ftp--host"."""
    return check_secret_name(f"{alias}--{service}--{field}")


def find_secret(store: SecretStore, name: str) -> str | None:
    """The secret's value, or None when the store has none (for optional settings)."""
    try:
        return store.get(name)
    except SecretNotFound:
        return None


def new_key() -> str:
    """A fresh random key: 32 bytes as 64 hexadecimal characters."""
    return random_source.token_hex(32)


def project_key(store: SecretStore, project_slug: str) -> str:
    """The project's pseudonymisation key, made on first use and kept.

    Named by the project slug, like the salts of PIXL's hasher. Losing this key
    means new pseudonyms for the same people: the stores keep it durably.
    """
    return get_or_create(store, check_secret_name(project_slug), new_key)


def get_or_create(store: SecretStore, name: str, make: Callable[[], str]) -> str:
    """Read a secret, or create it with `make()` when it does not exist yet.

    Stores that can be shared by several processes (the file store) make this
    atomic, so two plugins starting together agree on one value.
    """
    atomic = getattr(store, "get_or_create", None)
    if atomic is not None:
        return atomic(name, make)
    value = find_secret(store, name)
    if value is None:
        store.set(name, make())
        logger.info("created secret %s", name)
        value = store.get(name)
    return value


# --- the local file store -------------------------------------------------------------------


class FileSecrets:
    """Secrets in one JSON file (name -> value), mode 0600 in a 0700 folder.

    Writes go to a temporary file renamed over the old one, under an exclusive
    lock, so readers never see a half-written file and concurrent creators of
    the same key agree on one value.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileSecrets({str(self.path)!r})"

    def get(self, name: str) -> str:
        check_secret_name(name)
        with self._locked(exclusive=False):
            values = self._read()
        if name not in values:
            raise SecretNotFound(name, f" in {self.path}")
        return values[name]

    def set(self, name: str, value: str) -> None:
        check_secret_name(name)
        with self._locked(exclusive=True):
            values = self._read()
            values[name] = value
            self._write(values)

    def get_or_create(self, name: str, make: Callable[[], str]) -> str:
        check_secret_name(name)
        with self._locked(exclusive=True):
            values = self._read()
            if name not in values:
                values[name] = make()
                self._write(values)
                logger.info("created secret %s in %s", name, self.path)
            return values[name]

    @contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretsError(f"cannot read secrets file {self.path}: {exc.strerror}") from None
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            # The position is safe to show; the line's text would not be.
            raise SecretsError(
                f"secrets file {self.path} is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(values, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in values.items()
        ):
            raise SecretsError(f"secrets file {self.path} must be a JSON object of name -> string")
        return values

    def _write(self, values: dict[str, str]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(values, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)  # in case the file pre-existed with a wider mode
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


# --- environment variables ------------------------------------------------------------------


def env_variable_name(secret_name: str) -> str:
    """`test--ftp--host` -> `PIXL_SECRET_TEST__FTP__HOST` (dashes become underscores)."""
    return ENV_PREFIX + check_secret_name(secret_name).upper().replace("-", "_")


class EnvSecrets:
    """Read-only secrets from environment variables named by `env_variable_name`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return "EnvSecrets()"

    def get(self, name: str) -> str:
        variable = env_variable_name(name)
        value = self._environ.get(variable)
        if not value:
            raise SecretNotFound(name, f" (set environment variable {variable})")
        return value

    def set(self, name: str, value: str) -> None:
        raise SecretsError(
            f"the env secrets backend is read-only: set environment variable "
            f"{env_variable_name(name)} to store secret {name!r}"
        )


# --- Azure Key Vault ------------------------------------------------------------------------


class AzureKeyVaultSecrets:
    """Secrets in an Azure Key Vault (azure-keyvault-secrets), read once per process.

    `vault_url` is `https://<AZURE_KEY_VAULT_NAME>.vault.azure.net` in PIXL's
    set-up; the credential is azure-identity's `DefaultAzureCredential` (a
    service principal from AZURE_CLIENT_ID / AZURE_CLIENT_SECRET /
    AZURE_TENANT_ID, or a managed identity). `client_options` go to
    `SecretClient` (tests use them to trust a local server's certificate).
    """

    def __init__(self, vault_url: str, credential: Any = None, **client_options: Any) -> None:
        from azure.keyvault.secrets import SecretClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self.vault_url = vault_url
        self._client = SecretClient(vault_url=vault_url, credential=credential, **client_options)
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AzureKeyVaultSecrets({self.vault_url!r})"

    def get(self, name: str) -> str:
        check_secret_name(name)
        if name not in self._cache:
            self._cache[name] = self._fetch(name)
        return self._cache[name]

    def set(self, name: str, value: str) -> None:
        from azure.core.exceptions import AzureError

        check_secret_name(name)
        try:
            self._client.set_secret(name, value)
        except AzureError as exc:
            raise SecretsError(
                f"cannot store secret {name!r} in {self.vault_url}: {_azure_reason(exc)}"
            ) from None
        self._cache[name] = value

    def _fetch(self, name: str) -> str:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            value = self._client.get_secret(name).value
        except ResourceNotFoundError:
            raise SecretNotFound(name, f" in {self.vault_url}") from None
        except AzureError as exc:
            # `from None`: the SDK's exception may carry the raw response.
            raise SecretsError(
                f"cannot read secret {name!r} from {self.vault_url}: {_azure_reason(exc)}"
            ) from None
        if value is None:
            raise SecretNotFound(name, f" (it has no value in {self.vault_url})")
        return value


def _azure_reason(exc: Exception) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def azure_vault_url() -> str:
    """The vault of PIXL's environment variable AZURE_KEY_VAULT_NAME."""
    name = os.environ.get("AZURE_KEY_VAULT_NAME", "")
    if not name:
        raise SecretsError(
            "secrets backend 'azure' needs environment variable AZURE_KEY_VAULT_NAME"
        )
    return f"https://{name}.vault.azure.net"


def open_secret_store(settings: Settings) -> SecretStore:
    """The secret store chosen by `settings.secrets_backend`."""
    backend = settings.secrets_backend
    if backend == "file":
        return FileSecrets(settings.secrets_file)
    if backend == "env":
        return EnvSecrets()
    if backend == "azure":
        return AzureKeyVaultSecrets(azure_vault_url())
    raise SecretsError(
        f"PIXL_SECRETS_BACKEND must be one of {', '.join(SECRETS_BACKENDS)}, got {backend!r}"
    )


def check_secret_file(settings: Settings) -> None:
    """Refuse to start on a secrets file that others may read or change (file backend)."""
    if settings.secrets_backend != "file":
        return
    try:
        mode = os.stat(settings.secrets_file).st_mode
    except FileNotFoundError:
        return  # made on first write, mode 0600
    if mode & 0o077:
        raise SecretsError(
            f"secrets file {settings.secrets_file} has mode {mode & 0o777:04o}: others may read it;"
            f" run chmod 600 {settings.secrets_file}"
        )
