"""The `dicomweb` destination against a real DICOMweb server: the stack's second Orthanc
with the DICOMweb plugin (basic auth), and the same server behind a bearer-token gate
(as an Azure DICOM service authenticates)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from destination_support import assert_no_identifying_values, free_port

from orthanc_plugins.common.orthanc_api import get_json, post_json
from pixl_hooks import plugins
from pixl_hooks.types import DestinationRejected, DestinationUnavailable

pytestmark = pytest.mark.stack

PROJECT = "test-extract-uclh-omop-cdm-dicomweb"  # destination dicomweb, azure_kv_alias "test"
BEARER_TOKEN = "azure-style-access-token-123"


@pytest.fixture
def project(load_fixture_project):
    return load_fixture_project(PROJECT)


@pytest.fixture
def dicomweb_url(stack) -> str:
    return stack.settings.dicomweb_destination.url + "/dicom-web"


@pytest.fixture
def configured(secrets, stack, dicomweb_url):
    username, password = stack.settings.orthanc_auth
    secrets.set("test--dicomweb--url", dicomweb_url)
    secrets.set("test--dicomweb--username", username)
    secrets.set("test--dicomweb--password", password)
    return secrets


@pytest.fixture
def fresh_study(stack, make_deidentified_study):
    """A study the destination does not hold yet (removed if an earlier run left it)."""

    def make(seed: int):
        sent = make_deidentified_study(seed=seed)
        for orthanc_id in _find_study(stack, sent.study.pseudo_study_uid):
            stack.dicomweb.delete(f"/studies/{orthanc_id}")
        return sent

    return make


def _find_study(stack, study_uid: str) -> list[str]:
    return post_json(stack.dicomweb, "/tools/find",
                     {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})


def _arrived(stack, study_uid: str) -> dict:
    """What the destination holds for one study: patient ID, SOP UIDs, raw file bytes."""
    [orthanc_id] = _find_study(stack, study_uid)
    instances = get_json(stack.dicomweb, f"/studies/{orthanc_id}/instances")
    tags = get_json(stack.dicomweb, f"/studies/{orthanc_id}")
    return {
        "patient_id": tags["PatientMainDicomTags"]["PatientID"],
        "sop_uids": {i["MainDicomTags"]["SOPInstanceUID"] for i in instances},
        "files": [stack.dicomweb.get(f"/instances/{i['ID']}/file") for i in instances],
    }


def test_every_study_arrives_deidentified_and_counted(project, configured, stack, fresh_study):
    studies = [fresh_study(seed) for seed in (201, 202)]

    receipts = [plugins.export_dicom_study(project, s.study, configured) for s in studies]

    for sent, receipt in zip(studies, receipts):
        arrived = _arrived(stack, sent.study.pseudo_study_uid)
        assert receipt.files == 4 and receipt.location == f"studies/{sent.study.pseudo_study_uid}"
        assert arrived["patient_id"] == sent.study.pseudo_patient_id
        assert arrived["sop_uids"] == sent.sop_instance_uids
        for data in arrived["files"]:
            assert_no_identifying_values(data, sent.identifying)


def test_exporting_a_study_again_does_not_duplicate_it(project, configured, stack, fresh_study):
    sent = fresh_study(203)
    plugins.export_dicom_study(project, sent.study, configured)
    plugins.export_dicom_study(project, sent.study, configured)

    assert len(_find_study(stack, sent.study.pseudo_study_uid)) == 1
    assert len(_arrived(stack, sent.study.pseudo_study_uid)["sop_uids"]) == 4


def test_wrong_password_is_rejected_and_not_retryable(project, configured, fresh_study):
    configured.set("test--dicomweb--password", "wrong-password-456")

    with pytest.raises(DestinationRejected, match=r"credentials refused \(HTTP 401\)") as caught:
        plugins.export_dicom_study(project, fresh_study(204).study, configured)
    assert not caught.value.retryable and "wrong-password-456" not in str(caught.value)


def test_destination_down_is_a_retryable_error(project, configured, fresh_study):
    configured.set("test--dicomweb--url", f"http://127.0.0.1:{free_port()}/dicom-web")

    with pytest.raises(DestinationUnavailable, match="server unreachable") as caught:
        plugins.export_dicom_study(project, fresh_study(205).study, configured)
    assert caught.value.retryable


def test_missing_credentials_are_named(project, secrets, dicomweb_url):
    secrets.set("test--dicomweb--url", dicomweb_url)

    assert plugins.check_project_destinations(project, secrets) == [
        (f"project {project.slug}: set secret 'test--dicomweb--token', or "
         "'test--dicomweb--username' and 'test--dicomweb--password'")
    ]


# --- bearer tokens ------------------------------------------------------------------------


@pytest.fixture
def bearer_gate(stack):
    """A reverse proxy that admits only `Authorization: Bearer BEARER_TOKEN` and forwards to
    the real DICOMweb server with its basic credentials."""
    upstream = stack.settings.dicomweb_destination.url
    auth = stack.settings.orthanc_auth
    seen: list[str] = []

    class Gate(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) \
                if "chunked" not in self.headers.get("Transfer-Encoding", "") else self._chunked()
            if self.headers.get("Authorization") != f"Bearer {BEARER_TOKEN}":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("content-type", "accept")}
            answer = requests.request(self.command, upstream + self.path, data=body,
                                      headers=headers, auth=auth, timeout=60)
            self.send_response(answer.status_code)
            for key in ("Content-Type",):
                if key in answer.headers:
                    self.send_header(key, answer.headers[key])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def _chunked(self) -> bytes:
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()

        do_GET = do_POST = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", seen
    server.shutdown()
    server.server_close()


def test_bearer_token_authentication(project, secrets, stack, bearer_gate, fresh_study):
    url, seen = bearer_gate
    secrets.set("test--dicomweb--url", url)
    secrets.set("test--dicomweb--token", BEARER_TOKEN)
    sent = fresh_study(206)

    plugins.export_dicom_study(project, sent.study, secrets)

    assert seen and set(seen) == {f"Bearer {BEARER_TOKEN}"}
    assert _arrived(stack, sent.study.pseudo_study_uid)["sop_uids"] == sent.sop_instance_uids

    secrets.set("test--dicomweb--token", "expired-token")
    with pytest.raises(DestinationRejected, match="HTTP 401"):
        plugins.export_dicom_study(project, fresh_study(207).study, secrets)
