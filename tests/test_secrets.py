"""The secret stores: local file, environment variables, Azure Key Vault (a local HTTPS
server of the test's own speaking Key Vault's REST API to the real azure SDK)."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import socket
import ssl
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from azure.core.credentials import AccessToken

from orthanc_plugins.common.secrets import (
    AzureKeyVaultSecrets,
    EnvSecrets,
    FileSecrets,
    SecretNotFound,
    SecretsError,
    destination_secret_name,
    env_variable_name,
    open_secret_store,
    project_key,
)
from pixl_stack.certs import make_self_signed_cert

SECRET_VALUE = "s3cr3t-value-never-shown"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- file -------------------------------------------------------------------------------------


def test_file_store_round_trip_with_private_modes(tmp_path: Path):
    store = FileSecrets(tmp_path / "secrets" / "secrets.json")
    store.set("test--ftp--password", SECRET_VALUE)

    assert FileSecrets(store.path).get("test--ftp--password") == SECRET_VALUE
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_file_store_tightens_a_file_made_too_open(tmp_path: Path):
    path = tmp_path / "secrets.json"
    path.write_text("{}")
    path.chmod(0o644)

    FileSecrets(path).set("a", "b")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_secret_names_the_secret_and_file(tmp_path: Path):
    store = FileSecrets(tmp_path / "secrets.json")
    store.set("other", SECRET_VALUE)

    with pytest.raises(SecretNotFound) as caught:
        store.get("test--ftp--host")

    assert str(caught.value) == f"secret 'test--ftp--host' not found in {store.path}"
    assert isinstance(caught.value, KeyError)


def test_broken_file_error_shows_no_content(tmp_path: Path):
    path = tmp_path / "secrets.json"
    path.write_text('{"test--ftp--password": "' + SECRET_VALUE + '"')  # truncated

    with pytest.raises(SecretsError) as caught:
        FileSecrets(path).get("test--ftp--password")

    assert "is not valid JSON (line 1" in str(caught.value)
    assert SECRET_VALUE not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_invalid_secret_names_are_refused(tmp_path: Path):
    with pytest.raises(SecretsError, match="invalid secret name 'a b'"):
        FileSecrets(tmp_path / "s.json").set("a b", "x")
    with pytest.raises(SecretsError, match="invalid secret name"):
        destination_secret_name("my_alias", "ftp", "host")


def test_project_key_is_made_on_first_use_and_kept(tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "secrets.json"

    first = project_key(FileSecrets(path), "test-extract-uclh-omop-cdm")
    again = project_key(FileSecrets(path), "test-extract-uclh-omop-cdm")
    other = project_key(FileSecrets(path), "another-project")

    assert first == again != other
    assert len(first) == 64 and int(first, 16) >= 0
    assert json.loads(path.read_text())["test-extract-uclh-omop-cdm"] == first
    assert first not in caplog.text and other not in caplog.text
    assert "created secret test-extract-uclh-omop-cdm" in caplog.text


def _make_key(path: str, barrier) -> str:
    barrier.wait()
    return project_key(FileSecrets(Path(path)), "race-project")


def test_processes_creating_a_project_key_together_agree(tmp_path: Path):
    path = str(tmp_path / "secrets.json")
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(4)
        with context.Pool(4) as pool:
            keys = pool.starmap(_make_key, [(path, barrier)] * 4)

    assert len(set(keys)) == 1
    assert json.loads(Path(path).read_text()) == {"race-project": keys[0]}


# --- environment ------------------------------------------------------------------------------


def test_env_store_reads_pixl_secret_variables():
    store = EnvSecrets({"PIXL_SECRET_TEST__FTP__HOST": "ftp.example.org"})

    assert env_variable_name("test--ftp--host") == "PIXL_SECRET_TEST__FTP__HOST"
    assert env_variable_name("my-project--dicomweb--url") == "PIXL_SECRET_MY_PROJECT__DICOMWEB__URL"
    assert store.get("test--ftp--host") == "ftp.example.org"
    with pytest.raises(SecretNotFound, match=r"set environment variable PIXL_SECRET_TEST__FTP__PORT"):
        store.get("test--ftp--port")


def test_env_store_is_read_only_and_says_what_to_set():
    with pytest.raises(SecretsError, match="set environment variable PIXL_SECRET_MY_PROJECT"):
        project_key(EnvSecrets({}), "my-project")


# --- choosing a backend -----------------------------------------------------------------------


def test_backend_chosen_by_settings(base_settings, monkeypatch):
    assert isinstance(open_secret_store(base_settings), FileSecrets)
    assert open_secret_store(base_settings).path == base_settings.secrets_file
    env = dataclasses.replace(base_settings, secrets_backend="env")
    assert isinstance(open_secret_store(env), EnvSecrets)

    azure = dataclasses.replace(base_settings, secrets_backend="azure")
    monkeypatch.delenv("AZURE_KEY_VAULT_NAME", raising=False)
    with pytest.raises(SecretsError, match="AZURE_KEY_VAULT_NAME"):
        open_secret_store(azure)
    monkeypatch.setenv("AZURE_KEY_VAULT_NAME", "pixl-kv")
    assert open_secret_store(azure).vault_url == "https://pixl-kv.vault.azure.net"

    with pytest.raises(SecretsError, match="must be one of file, env, azure, got 'vault'"):
        open_secret_store(dataclasses.replace(base_settings, secrets_backend="vault"))


# --- Azure Key Vault --------------------------------------------------------------------------

TOKEN = "fake-aad-token"


class FakeCredential:
    """Stands in for Microsoft Entra ID, which cannot run here; the vault side is real HTTP."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


class KeyVaultHandler(BaseHTTPRequestHandler):
    """The parts of Key Vault's REST API (7.x) that SecretClient.get_secret/set_secret use."""

    secrets: dict[str, str]
    requests_seen: list[tuple[str, str, str]]

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        # Key Vault's challenge: the SDK then asks its credential for a token for `resource`.
        self._reply(401, {"error": {"code": "Unauthorized", "message": "no token"}}, {
            "WWW-Authenticate": 'Bearer authorization="https://login.microsoftonline.com/'
                                'tenant-id", resource="https://vault.azure.net"',
        })
        self._drain()
        return False

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _secret_body(self, name: str) -> dict:
        return {
            "value": self.secrets[name],
            "id": f"https://{self.headers['Host']}/secrets/{name}/0123456789abcdef",
            "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000,
                           "recoveryLevel": "Recoverable+Purgeable"},
        }

    def _secret_name(self, method: str) -> str | None:
        """Record the request; the secret it names, or None once a 401 has been answered."""
        path = urlparse(self.path)
        self.requests_seen.append((method, path.path.rstrip("/"), path.query))
        if not self._authorised():
            return None
        return path.path.split("/")[2]

    def do_GET(self) -> None:
        name = self._secret_name("GET")
        if name is None:
            return
        if name not in self.secrets:
            self._reply(404, {"error": {"code": "SecretNotFound",
                                        "message": f"A secret with (name/id) {name} was not found"}})
            return
        self._reply(200, self._secret_body(name))

    def do_PUT(self) -> None:
        name = self._secret_name("PUT")
        if name is None:
            return
        self.secrets[name] = json.loads(self._drain())["value"]
        self._reply(200, self._secret_body(name))


@pytest.fixture
def key_vault(tmp_path: Path):
    certfile, keyfile = make_self_signed_cert(tmp_path / "kv.pem", tmp_path / "kv.key")
    handler = type("Handler", (KeyVaultHandler,), {"secrets": {}, "requests_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    credential = FakeCredential()
    store = AzureKeyVaultSecrets(
        f"https://127.0.0.1:{server.server_address[1]}", credential,
        connection_verify=str(certfile),
        verify_challenge_resource=False,  # the vault is 127.0.0.1, not *.vault.azure.net
    )
    yield store, handler, credential
    server.shutdown()
    server.server_close()


def test_azure_store_reads_pixl_named_secrets(key_vault, caplog):
    caplog.set_level(logging.DEBUG)
    store, handler, credential = key_vault
    handler.secrets["test--ftp--password"] = SECRET_VALUE

    assert store.get("test--ftp--password") == SECRET_VALUE
    assert store.get("test--ftp--password") == SECRET_VALUE  # cached: one vault read

    reads = [r for r in handler.requests_seen if r[0] == "GET"]
    assert [r[1] for r in reads] == ["/secrets/test--ftp--password"] * 2  # challenge, then read
    assert "api-version=" in reads[0][2]
    assert credential.scopes == ["https://vault.azure.net/.default"]
    assert SECRET_VALUE not in caplog.text and TOKEN not in caplog.text


def test_azure_missing_secret_is_secret_not_found(key_vault):
    store, _, _ = key_vault
    with pytest.raises(SecretNotFound, match="secret 'test--dicomweb--url' not found in https://127"):
        store.get("test--dicomweb--url")


def test_azure_project_key_is_created_in_the_vault_and_kept(key_vault):
    store, handler, _ = key_vault

    key = project_key(store, "test-extract-uclh-omop-cdm")

    assert handler.secrets == {"test-extract-uclh-omop-cdm": key}
    assert project_key(store, "test-extract-uclh-omop-cdm") == key
    assert ("PUT", "/secrets/test-extract-uclh-omop-cdm") in {r[:2] for r in handler.requests_seen}


def test_azure_vault_down_is_an_error_without_values(tmp_path: Path):
    certfile, _ = make_self_signed_cert(tmp_path / "c.pem", tmp_path / "k.pem")
    store = AzureKeyVaultSecrets(f"https://127.0.0.1:{free_port()}", FakeCredential(),
                                 connection_verify=str(certfile), verify_challenge_resource=False,
                                 retry_total=0)
    with pytest.raises(SecretsError, match=r"cannot read secret 'test--ftp--host' .*ServiceRequestError"):
        store.get("test--ftp--host")
