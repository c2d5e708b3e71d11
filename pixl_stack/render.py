"""Render the Orthanc JSON configurations from the templates in `orthanc-config/`.

Templates use `${name}` placeholders; every value is inserted JSON-encoded, so
a path can never break the JSON around it. No password is written into a
configuration: where Orthanc needs one (the PostgreSQL index, the development
servers' own users) the file names an environment variable, `${PIXL_DB_PASSWORD}`,
which Orthanc substitutes when it reads the file. raw and anon have no Orthanc
users at all: their plugins' request filter authenticates (orthanc_plugins/common/access.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from string import Template
from typing import Any

from orthanc_plugins.common.settings import REPO_ROOT, OrthancNode, Settings

CONFIG_DIR = REPO_ROOT / "orthanc-config"
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")


def plugin_script(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the plugin entry module {module}")
    return spec.origin


def modality(node: OrthancNode, *, find: bool, move: bool, store: bool) -> dict[str, Any]:
    return {
        "AET": node.aet, "Host": node.host, "Port": node.dicom_port,
        "AllowEcho": True, "AllowFind": find, "AllowMove": move, "AllowStore": store,
        "AllowGet": False,
    }


def raw_modalities(settings: Settings) -> dict[str, Any]:
    archives = [settings.vna] + ([settings.secondary_vna] if settings.secondary_vna else [])
    return {node.name: modality(node, find=True, move=True, store=True) for node in archives}


def environment_reference(variable: str) -> str:
    """A value Orthanc takes from its environment when it reads the configuration."""
    return "${" + variable + "}"


def template_values(settings: Settings, node: OrthancNode, storage_dir: Path) -> dict[str, Any]:
    return {
        "storage_dir": str(storage_dir),
        "webviewer_cache": str(storage_dir / "webviewer-cache"),
        "http_port": node.orthanc_http_port,
        # Behind the TLS front, Orthanc answers its loopback interface only.
        "remote_access": not node.tls,
        "dicom_port": node.dicom_port,
        "aet": node.aet,
        # The development VNA and DICOMweb servers keep Orthanc's own basic auth.
        "registered_users": {settings.orthanc_username: environment_reference("ORTHANC_PASSWORD")},
        # anon takes studies over HTTPS from raw; DICOM from raw alone (C-ECHO).
        "anon_modalities": {"raw": modality(settings.raw, find=False, move=False, store=False)},
        "max_storage_mb": settings.raw_max_storage_mb,
        # The VNA sends C-STORE to raw (as the C-MOVE it was asked for) and is the
        # only node raw accepts C-STORE from.
        "raw_modalities": raw_modalities(settings),
        "vna_modalities": {"raw": modality(settings.raw, find=True, move=True, store=False)},
        # GDCM decodes what Orthanc cannot by itself (JPEG 2000, JPEG-LS) for the web
        # UI's previews; anon's Web Viewer lets whoever signs a project off look at the
        # de-identified images for burned-in text.
        "raw_plugins": [
            str(PLUGIN_DIR / "libOrthancPython.so"),
            str(PLUGIN_DIR / "libOrthancPostgreSQLIndex.so"),
            str(PLUGIN_DIR / "libOrthancGdcm.so"),
        ],
        "anon_plugins": [
            str(PLUGIN_DIR / "libOrthancPython.so"),
            str(PLUGIN_DIR / "libOrthancDicomWeb.so"),
            str(PLUGIN_DIR / "libOrthancGdcm.so"),
            str(PLUGIN_DIR / "libOrthancWebViewer.so"),
        ],
        "python_script": plugin_script(f"orthanc_plugins.{node.name}.plugin")
        if node.name in ("raw", "anon") else "",
        "postgresql_index": {
            "EnableIndex": True, "EnableStorage": False,
            "Host": settings.pg_host, "Port": settings.pg_port,
            "Database": orthanc_index_database(settings, node),
            "Username": settings.pg_user, "Password": environment_reference("PIXL_DB_PASSWORD"),
            "Lock": False,
        },
    }


def orthanc_index_database(settings: Settings, node: OrthancNode) -> str:
    """One PostgreSQL database per Orthanc server that uses the PostgreSQL index."""
    return f"orthanc_{node.name}{'_' + settings.instance_name if settings.instance_name else ''}"


def render_config(template_name: str, settings: Settings, node: OrthancNode, storage_dir: Path) -> dict:
    template = Template((CONFIG_DIR / f"{template_name}.json.in").read_text(encoding="utf-8"))
    values = {k: json.dumps(v) for k, v in template_values(settings, node, storage_dir).items()}
    # Inserted inside a JSON string, so as plain text (instance names are [a-z0-9-]).
    values["instance_suffix"] = f" {settings.instance_name}" if settings.instance_name else ""
    config = json.loads(template.substitute(values))
    if settings.dicom_tls and template_name in DICOM_TLS_NODES:
        config.update(dicom_tls_options(settings))
        for remote in config.get("DicomModalities", {}).values():
            remote["UseDicomTls"] = True
    return config


# raw and the archive speak DICOM TLS to each other when settings.dicom_tls is on.
DICOM_TLS_NODES = ("raw", "vna")


def dicom_tls_options(settings: Settings) -> dict[str, Any]:
    """Orthanc's DICOM TLS: its DICOM port speaks TLS only, peers must show a
    certificate signed by the CA bundle (mutual TLS)."""
    return {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(settings.tls_certificate_file),
        "DicomTlsPrivateKey": str(settings.tls_key_file),
        "DicomTlsTrustedCertificates": str(settings.tls_ca_bundle),
        "DicomTlsRemoteCertificateRequired": True,
    }


def render_tls_front(node: OrthancNode, certfile: Path, keyfile: Path) -> str:
    """stunnel's configuration of the HTTPS front of `node`: TLS on the node's
    public port, plain HTTP to Orthanc on the loopback interface."""
    return "\n".join([
        "foreground = yes",
        "pid =",
        "syslog = no",
        "debug = warning",
        # Without TCP_NODELAY every small answer waits for Nagle's algorithm (~40 ms).
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
        f"[{node.name}-https]",
        f"accept = {node.http_port}",
        f"connect = 127.0.0.1:{node.orthanc_http_port}",
        f"cert = {certfile}",
        f"key = {keyfile}",
        "sslVersionMin = TLSv1.2",
        "",
    ])
