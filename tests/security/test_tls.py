"""HTTPS to raw and anon: pixl-tui trusts only a server its CA signed, refuses
plain HTTP, and no generated configuration file holds a clear-text password."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import requests

from orthanc_plugins.common.access import service_password
from orthanc_plugins.common.secrets import SecretsError, check_secret_file, open_secret_store
from pixl_stack.certs import DevelopmentPki
from pixl_stack.render import render_config
from tui import exit_codes
from tui.cli import main
from tui.client import ClientConfig, InsecureTransport, RawClient, Unreachable, check_transport


@pytest.mark.stack
def test_pixl_tui_refuses_a_server_its_ca_did_not_sign(stack, tmp_path, capsys):
    other_ca = DevelopmentPki(tmp_path / "other").ensure().ca_certificate
    url = stack.settings.raw.url
    user, password = stack.settings.orthanc_auth

    with pytest.raises(Unreachable, match="TLS certificate is not signed by a trusted CA"):
        RawClient(ClientConfig(url, user, password, ca_bundle=str(other_ca))).health()
    assert main(["--url", url, "--ca-bundle", str(other_ca), "health"]) == exit_codes.UNREACHABLE
    assert "not signed by a trusted CA" in capsys.readouterr().err

    trusted = RawClient(ClientConfig(url, user, password, ca_bundle=str(stack.settings.tls_ca_bundle)))
    assert trusted.health().healthy


def test_pixl_tui_refuses_plain_http_unless_told_it_runs_on_loopback(monkeypatch, capsys):
    monkeypatch.delenv("PIXL_TUI_PLAIN_HTTP_LOOPBACK", raising=False)
    with pytest.raises(InsecureTransport, match="refusing plain HTTP"):
        check_transport(ClientConfig("http://127.0.0.1:1", "u", "p"))
    with pytest.raises(InsecureTransport, match="loopback addresses only"):
        check_transport(ClientConfig("http://raw.hospital.example:8042", "u", "p", plain_http_loopback=True))
    check_transport(ClientConfig("http://127.0.0.1:1", "u", "p", plain_http_loopback=True))
    check_transport(ClientConfig("https://raw.hospital.example", "u", "p"))

    assert main(["--url", "http://127.0.0.1:1", "health"]) == exit_codes.INVALID_INPUT
    assert "refusing plain HTTP to http://127.0.0.1:1" in capsys.readouterr().err
    assert main(["--url", "http://127.0.0.1:1", "--plain-http-loopback", "health"]) == exit_codes.UNREACHABLE


@pytest.mark.stack
def test_raw_and_anon_speak_https_only(stack):
    for node in (stack.settings.raw, stack.settings.anon):
        assert node.url.startswith("https://")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{node.host}:{node.http_port}/system", auth=stack.settings.orthanc_auth,
                         timeout=10)
        # Orthanc itself, behind the front, answers the loopback interface only.
        config = json.loads((stack.stack.state_dir / "config" / f"{node.name}.json").read_text())
        assert config["HttpPort"] == node.orthanc_http_port and config["RemoteAccessAllowed"] is False
        assert "SslEnabled" not in config  # Debian's Orthanc crashes with it: the front does TLS


@pytest.mark.stack
def test_no_generated_configuration_holds_a_clear_text_password(stack, credentials):
    settings = stack.settings
    passwords = {
        settings.orthanc_password, settings.pg_password, settings.ftps_password,
        service_password(open_secret_store(settings)), credentials.operator[1], credentials.viewer[1],
    }
    generated = sorted((stack.stack.state_dir / "config").iterdir())
    assert {p.name for p in generated} >= {"raw.json", "anon.json", "vna.json", "dicomweb.json",
                                           "raw-tls.conf", "anon-tls.conf"}
    for path in generated:
        text = path.read_text()
        for password in passwords:
            assert password not in text, f"{path.name} holds a password"
    raw = json.loads((stack.stack.state_dir / "config" / "raw.json").read_text())
    assert raw["PostgreSQL"]["Password"] == "${PIXL_DB_PASSWORD}"  # Orthanc reads it from its environment
    assert "RegisteredUsers" not in raw and raw["AuthenticationEnabled"] is False


def test_the_deployment_configuration_holds_no_password_either(base_settings, tmp_path):
    for node in ("raw", "anon"):
        text = json.dumps(render_config(node, base_settings, getattr(base_settings, node), tmp_path))
        assert base_settings.pg_password not in text and base_settings.orthanc_password not in text


def test_a_secrets_file_others_can_read_is_refused_at_start(pixl_settings):
    path: Path = pixl_settings.secrets_file
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    path.chmod(0o600)
    check_secret_file(pixl_settings)
    path.chmod(0o644)
    with pytest.raises(SecretsError, match=f"secrets file {path} has mode 0644: others may read it"):
        check_secret_file(pixl_settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # refused, not silently changed
