"""Users of every role on the session's stack, and a study of generated
(identifiable) data in raw to read, download and refuse."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from orthanc_plugins.common.access import OPERATOR, SERVICE_USER, VIEWER, service_password, set_user
from orthanc_plugins.common.orthanc_api import find_study, get_json
from orthanc_plugins.common.secrets import open_secret_store
from pixl_stack import studygen

# Users are read again at most every 10 s (access.USERS_RELOAD_SECONDS): generous bound.
USERS_VISIBLE_WITHIN = 30.0


@dataclass(frozen=True)
class Credentials:
    admin: tuple[str, str]
    operator: tuple[str, str]
    viewer: tuple[str, str]
    service: tuple[str, str]

    def of(self, role: str) -> tuple[str, str] | None:
        return None if role == "anonymous" else getattr(self, role)


@pytest.fixture(scope="session")
def credentials(stack) -> Credentials:
    """An operator and a viewer added to the secret store, once raw and anon know them."""
    store = open_secret_store(stack.settings)
    operator = ("security-operator", "operator-password-1")
    viewer = ("security-viewer", "viewer-password-1")
    set_user(store, operator[0], OPERATOR, operator[1])
    set_user(store, viewer[0], VIEWER, viewer[1])
    found = Credentials(stack.settings.orthanc_auth, operator, viewer,
                        (SERVICE_USER, service_password(store)))
    deadline = time.monotonic() + USERS_VISIBLE_WITHIN
    for node in (stack.settings.raw, stack.settings.anon):
        while requests.get(node.url + "/system", auth=viewer, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, f"{node.name} did not learn the new users"
            time.sleep(0.5)
    return found


@dataclass(frozen=True)
class RawStudy:
    study: studygen.GeneratedStudy
    orthanc_id: str
    instance_id: str


@pytest.fixture(scope="session")
def raw_study(stack, tmp_path_factory) -> RawStudy:
    """A generated study stored in raw (as an admin would), removed at the end."""
    folder: Path = tmp_path_factory.mktemp("security-study")
    spec = studygen.StudySpec(modality="CT", series=1, instances_per_series=2, seed=1501)
    study = studygen.write_generated_study(spec, studygen.make_patient(spec.seed), folder)
    for file in study.files:
        stack.raw.post("/instances", file.read_bytes())
    orthanc_id = find_study(stack.raw, study.study_uid)
    assert orthanc_id
    instance_id = get_json(stack.raw, f"/studies/{orthanc_id}/instances")[0]["ID"]
    yield RawStudy(study, orthanc_id, instance_id)
    stack.raw.delete(f"/studies/{orthanc_id}")
