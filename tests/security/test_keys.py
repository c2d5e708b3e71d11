"""pixl-keys: users stored hashed, project keys backed up and restored, and a
restore that would change a project's pseudonyms refused."""

from __future__ import annotations

import base64
import io
import json
import stat

import pytest

from orthanc_plugins.common import access
from orthanc_plugins.common.access import Authenticator, hash_password, load_users, verify_password
from orthanc_plugins.common.secrets import FileSecrets, project_key
from pixl_stack import keys


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def store_settings(pixl_settings, monkeypatch):
    monkeypatch.setenv("PIXL_SECRETS_FILE", str(pixl_settings.secrets_file))
    monkeypatch.setenv("PIXL_SECRETS_BACKEND", "file")
    return FileSecrets(pixl_settings.secrets_file)


def test_user_set_stores_a_scrypt_hash_and_the_filter_accepts_it(store_settings, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
    assert keys.main(["user-set", "alice", "operator"]) == 0
    stored = store_settings.get("pixl-users")
    assert "a-long-password-1" not in stored
    user = load_users(store_settings)["alice"]
    assert user.role == "operator" and user.password_hash.startswith("scrypt$")
    assert verify_password("a-long-password-1", user.password_hash)
    assert not verify_password("a-long-password-2", user.password_hash)

    assert Authenticator(store_settings).identify(basic("alice", "a-long-password-1")).role == "operator"

    assert keys.main(["users"]) == 0
    assert "alice\toperator" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert keys.main(["user-set", "bob", "viewer"]) == 1
    assert "at least 12 characters" in capsys.readouterr().err


def test_the_credential_cache_runs_scrypt_once_per_credential(store_settings, monkeypatch):
    store_settings.set("pixl-users", json.dumps({"carol": {"role": "viewer",
                                                           "password": hash_password("carol-password-1")}}))
    authenticator = Authenticator(store_settings)
    calls = []
    original = access.verify_password
    monkeypatch.setattr(access, "verify_password", lambda *a: calls.append(1) or original(*a))
    for _ in range(100):
        assert authenticator.identify(basic("carol", "carol-password-1")).user == "carol"
        assert authenticator.identify(basic("carol", "not-her-password")) is None
        assert authenticator.identify(basic("nobody", "carol-password-1")) is None
    assert len(calls) == 2  # one right and one wrong password, each verified once


def test_project_keys_are_backed_up_and_restored(store_settings, tmp_path, capsys):
    first = project_key(store_settings, "project-one")
    second = project_key(store_settings, "project-two")
    backup = tmp_path / "keys.json"

    assert keys.main(["backup", str(backup), "project-one", "project-two", "project-none"]) == 0
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert first not in capsys.readouterr().out
    assert keys.main(["backup", str(backup), "project-one"]) == 1  # never overwritten
    assert "exists" in capsys.readouterr().err

    # The store is lost: a fresh one gets the keys back, and the same pseudonyms follow.
    store_settings.path.unlink()
    assert keys.main(["restore", str(backup)]) == 0
    assert capsys.readouterr().out.splitlines() == ["project-one\trestored", "project-two\trestored"]
    assert (project_key(store_settings, "project-one"), project_key(store_settings, "project-two")) == (first, second)


def test_a_restore_that_would_change_pseudonyms_is_refused(store_settings, tmp_path, capsys):
    project_key(store_settings, "project-one")
    backup = tmp_path / "keys.json"
    backup.write_text(json.dumps({"format": keys.BACKUP_FORMAT, "keys": {"project-one": "ab" * 32}}))
    current = store_settings.get("project-one")

    assert keys.main(["restore", str(backup)]) == 1
    assert "already has a different key: restoring would give its patients new pseudonyms" in capsys.readouterr().err
    assert store_settings.get("project-one") == current
    assert keys.main(["restore", str(backup), "--replace"]) == 0
    assert store_settings.get("project-one") == "ab" * 32


def test_a_removed_user_is_refused_once_the_cache_and_the_users_are_renewed(store_settings):
    now = [1000.0]
    access.set_user(store_settings, "dave", "viewer", "dave-password-1")
    authenticator = Authenticator(store_settings, clock=lambda: now[0])
    assert authenticator.identify(basic("dave", "dave-password-1")).user == "dave"

    assert access.remove_user(store_settings, "dave")
    now[0] += 1  # still cached: the filter stays cheap
    assert authenticator.identify(basic("dave", "dave-password-1")).user == "dave"
    now[0] += access.CREDENTIAL_CACHE_SECONDS + access.USERS_RELOAD_SECONDS
    assert authenticator.identify(basic("dave", "dave-password-1")) is None
