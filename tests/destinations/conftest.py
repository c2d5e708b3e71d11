"""Fixtures of the destination tests: real servers (FTPS, HTTPS) on free ports, and studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from destination_support import (
    DeidentifiedStudy,
    TlsFiles,
    start_ftps_server,
    stop_process,
)
from destination_support import (
    make_deidentified_study as make_study,
)

from orthanc_plugins.common.projects import ProjectConfig, load_project
from orthanc_plugins.common.secrets import FileSecrets
from pixl_stack.certs import make_self_signed_cert


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = make_self_signed_cert(folder / "cert.pem", folder / "key.pem")
    return TlsFiles(certfile, keyfile)


@pytest.fixture
def ftps_server(tmp_path: Path, tls_files: TlsFiles):
    server = start_ftps_server(tmp_path, tls_files)
    yield server
    stop_process(server.process)


@pytest.fixture
def secrets(tmp_path: Path) -> FileSecrets:
    return FileSecrets(tmp_path / "secrets" / "secrets.json")


@pytest.fixture
def load_fixture_project(generated_inputs: Path):
    """A test project's configuration (tests/pixl_inputs.py), by file name (without .yaml)."""

    def load(name: str) -> ProjectConfig:
        configs = generated_inputs / "project-configs"
        return load_project(configs / f"{name}.yaml", configs, configs / "tag-operations")

    return load


@pytest.fixture
def make_deidentified_study(tmp_path: Path):
    def make(seed: int = 1, **spec) -> DeidentifiedStudy:
        return make_study(tmp_path / "studies", seed, **spec)

    return make
