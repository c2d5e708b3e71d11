"""Render the Orthanc JSON configurations from the templates in `orthanc-config/`.

Templates use `${name}` placeholders; every value is inserted JSON-encoded, so
a password or a path can never break the JSON around it.
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


def template_values(settings: Settings, node: OrthancNode, storage_dir: Path) -> dict[str, Any]:
    return {
        "storage_dir": str(storage_dir),
        "webviewer_cache": str(storage_dir / "webviewer-cache"),
        "http_port": node.http_port,
        "dicom_port": node.dicom_port,
        "aet": node.aet,
        "registered_users": {settings.orthanc_username: settings.orthanc_password},
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
            "Username": settings.pg_user, "Password": settings.pg_password,
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
    return json.loads(template.substitute(values))
