"""Fixtures of the fault-injection and bad-input tests: the repository's own projects."""

from __future__ import annotations

import pytest

from orthanc_plugins.common.projects import ProjectConfig, load_project
from orthanc_plugins.common.settings import REPO_ROOT

PROJECTS_DIR = REPO_ROOT / "projects"
TAG_RULES_DIR = REPO_ROOT / "tag_rules"


@pytest.fixture
def repo_project():
    """A project of `projects/`, by slug, with the rules of `tag_rules/`."""

    def load(slug: str) -> ProjectConfig:
        return load_project(PROJECTS_DIR / f"{slug}.yaml", PROJECTS_DIR, TAG_RULES_DIR)

    return load
