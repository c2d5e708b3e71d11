"""Fixtures of the raw plugin's tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.settings import Settings
from orthanc_plugins.raw.throttle import ensure_controls


@pytest.fixture
def conn(pixl_settings: Settings):
    """An autocommit connection (the queue functions are each their own transaction)."""
    with pixl_db.connect(pixl_settings, autocommit=True) as connection:
        ensure_controls(connection, pixl_settings)
        yield connection


@pytest.fixture
def settings_with_project(pixl_settings: Settings, tmp_path: Path):
    """Settings whose projects folder configures the project named in a sample CSV, as a copy
    of the test project test-extract-uclh-omop-cdm."""

    def make(project_name: str) -> Settings:
        folder = tmp_path / "projects"
        folder.mkdir(exist_ok=True)
        template = (pixl_settings.projects_dir / "test-extract-uclh-omop-cdm.yaml").read_text()
        (folder / f"{project_name}.yaml").write_text(
            template.replace('name: "test-extract-uclh-omop-cdm"', f'name: "{project_name}"')
        )
        return dataclasses.replace(pixl_settings, projects_dir=folder)

    return make
