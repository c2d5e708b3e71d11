"""Fixtures of the de-identification tests."""

from __future__ import annotations

import pytest

from orthanc_plugins.anon.deid.engine import CompiledProject, load_compiled_project

from .helpers import PROJECTS_DIR, TAG_RULES_DIR


@pytest.fixture(scope="session")
def demo() -> CompiledProject:
    """Our demo project, with the repository's own tag rules."""
    return load_compiled_project("demo", PROJECTS_DIR, TAG_RULES_DIR)
