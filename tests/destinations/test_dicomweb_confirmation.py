"""The `dicomweb` destination's confirmation, against the real DICOMweb Orthanc behind a
small STOW-RS proxy of the test's own that refuses, drops or calls duplicate some
instances, mid-study, the way real servers answer (PS3.18: 202 with a FailedSOPSequence,
409 when nothing was stored, failure reason 0x0111 for an instance already held)."""

from __future__ import annotations

import dataclasses
import io
import re
import threading
import tracemalloc
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from orthanc_plugins.common.orthanc_api import get_json, post_json
from orthanc_plugins.common.projects import load_project
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_hooks import plugins
from pixl_hooks.destinations import dicomweb
from pixl_hooks.types import DestinationIncomplete, zip_dicom_files

pytestmark = pytest.mark.stack

OUT_OF_RESOURCES = 0xA700
PROJECT_FILE = REPO_ROOT / "projects" / "demo-dicomweb.yaml"


@dataclasses.dataclass
class StowProxy:
    """What the proxy does to the next requests, and what it saw."""

    url: str = ""
    refuse: set[str] = dataclasses.field(default_factory=set)  # answered 0xA700, not stored
    refuse_once: set[str] = dataclasses.field(default_factory=set)
    drop_once: set[str] = dataclasses.field(default_factory=set)  # silently left out
    refuse_existing: bool = False  # 0x0111 for what upstream holds; 409 if nothing new
    unavailable_requests: int = 0  # answer this many next POSTs with 503 (after reading them)
    posts: list[list[str]] = dataclasses.field(default_factory=list)  # SOP UIDs per POST


def _sop_uids_of(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    boundary = re.search(r"boundary=([^;]+)", content_type).group(1).strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        payload = chunk.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
        uid = str(pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True).SOPInstanceUID)
        parts.append((uid, payload))
    return parts


def _failed_item(uid: str, reason: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = uid
    item.FailureReason = reason
    return item


@pytest.fixture
def stow_proxy(stack):
    upstream = stack.settings.dicomweb_destination.url
    auth = stack.settings.orthanc_auth
    state = StowProxy()

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # QIDO-RS, passed through
            answer = requests.get(upstream + self.path, auth=auth, timeout=60,
                                  headers={"Accept": self.headers.get("Accept", "*/*")})
            self._answer(answer.status_code, answer.content,
                         answer.headers.get("Content-Type", "application/dicom+json"))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            parts = _sop_uids_of(body, self.headers["Content-Type"])
            state.posts.append([uid for uid, _ in parts])
            if state.unavailable_requests:
                state.unavailable_requests -= 1
                self._answer(503, b"busy", "text/plain")
                return
            held = self._held(self.path) if state.refuse_existing else set()
            failed, forward = [], []
            for uid, payload in parts:
                if uid in state.refuse or uid in state.refuse_once:
                    state.refuse_once.discard(uid)
                    failed.append(_failed_item(uid, OUT_OF_RESOURCES))
                elif uid in held:
                    failed.append(_failed_item(uid, dicomweb.DUPLICATE_SOP_INSTANCE))
                elif uid in state.drop_once:
                    state.drop_once.discard(uid)
                else:
                    forward.append(payload)
            answer = Dataset()
            if forward:
                stored = self._forward(forward)
                answer.ReferencedSOPSequence = getattr(stored, "ReferencedSOPSequence", [])
            if failed:
                answer.FailedSOPSequence = failed
            status = 200 if not failed else (202 if forward else 409)
            self._answer(status, answer.to_json().encode(), "application/dicom+json")

        def _held(self, path: str) -> set[str]:
            answer = requests.get(f"{upstream}{path}/instances", auth=auth, timeout=60,
                                  headers={"Accept": "application/dicom+json"})
            return {i["00080018"]["Value"][0] for i in answer.json()} if answer.content else set()

        def _forward(self, payloads: list[bytes]) -> Dataset:
            boundary = "proxy-boundary-7f3a"
            body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                            + p + b"\r\n" for p in payloads) + f"--{boundary}--\r\n".encode()
            answer = requests.post(
                upstream + self.path, data=body, auth=auth, timeout=60,
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                         "Accept": "application/dicom+json"},
            )
            answer.raise_for_status()
            return Dataset.from_json(answer.content)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def project():
    return load_project(PROJECT_FILE, PROJECT_FILE.parent, REPO_ROOT / "tag_rules")


@pytest.fixture
def configured(secrets, stack, stow_proxy, project, monkeypatch):
    username, password = stack.settings.orthanc_auth
    alias = project.secret_alias
    secrets.set(f"{alias}--dicomweb--url", stow_proxy.url)
    secrets.set(f"{alias}--dicomweb--username", username)
    secrets.set(f"{alias}--dicomweb--password", password)
    # Several requests per study, so that failures land mid-study; no pause between rounds.
    monkeypatch.setattr(dicomweb, "INSTANCES_PER_REQUEST", 4)
    monkeypatch.setattr(dicomweb, "ROUND_PAUSE_SECONDS", 0)
    return secrets


@pytest.fixture
def fresh_study(stack, make_deidentified_study):
    """A 12-instance study the destination does not hold yet, and its SOP UIDs in zip order."""

    def make(seed: int):
        sent = make_deidentified_study(seed=seed, series=3, instances=4)
        for orthanc_id in _find_study(stack, sent.study.pseudo_study_uid):
            stack.dicomweb.delete(f"/studies/{orthanc_id}")
        order = [i.sop_instance_uid for i in dicomweb.zip_instances(sent.study.zip_path)]
        return sent, order

    return make


def _find_study(stack, study_uid: str) -> list[str]:
    return post_json(stack.dicomweb, "/tools/find",
                     {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})


def _held_upstream(stack, study_uid: str) -> set[str]:
    held = set()
    for orthanc_id in _find_study(stack, study_uid):
        for instance in get_json(stack.dicomweb, f"/studies/{orthanc_id}/instances"):
            held.add(instance["MainDicomTags"]["SOPInstanceUID"])
    return held


def test_refused_and_silently_missing_instances_are_sent_again_alone(
    project, configured, stack, stow_proxy, fresh_study
):
    sent, order = fresh_study(301)
    # Mid-study: two refused in the second request (a 202), one left out of the third (a 200).
    stow_proxy.refuse_once = {order[5], order[6]}
    stow_proxy.drop_once = {order[9]}

    receipt = plugins.export_dicom_study(project, sent.study, configured)

    assert receipt.files == 12
    assert stow_proxy.posts[:3] == [order[0:4], order[4:8], order[8:12]]
    assert stow_proxy.posts[3:] == [[order[5], order[6], order[9]]]  # the missing ones only
    assert _held_upstream(stack, sent.study.pseudo_study_uid) == set(order)


def test_an_instance_never_confirmed_is_a_retryable_incomplete_export(
    project, configured, stack, stow_proxy, fresh_study
):
    sent, order = fresh_study(302)
    stow_proxy.refuse = {order[7]}

    with pytest.raises(DestinationIncomplete) as caught:
        plugins.export_dicom_study(project, sent.study, configured)

    assert caught.value.retryable
    assert str(caught.value) == (
        f"DICOMweb store of study {sent.study.pseudo_study_uid} for project {project.slug}: "
        f"1 of 12 instances not confirmed after {dicomweb.STORE_ROUNDS} rounds "
        "(1 refused with failure reason 0xA700)")
    assert stow_proxy.posts[3:] == [[order[7]]] * (dicomweb.STORE_ROUNDS - 1)
    assert _held_upstream(stack, sent.study.pseudo_study_uid) == set(order) - {order[7]}


def test_a_server_refusing_what_it_holds_makes_a_repeated_export_a_success(
    project, configured, stack, stow_proxy, fresh_study
):
    sent, order = fresh_study(303)
    stow_proxy.refuse_existing = True
    plugins.export_dicom_study(project, sent.study, configured)
    stow_proxy.posts.clear()

    # Everything is there: every request is a 409 of duplicates, and the export succeeds.
    receipt = plugins.export_dicom_study(project, sent.study, configured)
    assert receipt.files == 12 and stow_proxy.posts == [order[0:4], order[4:8], order[8:12]]

    # One instance lost at the destination: it is stored, the duplicates still count.
    [orthanc_id] = _find_study(stack, sent.study.pseudo_study_uid)
    lost = get_json(stack.dicomweb, f"/studies/{orthanc_id}/instances")[0]
    stack.dicomweb.delete(f"/instances/{lost['ID']}")
    assert plugins.export_dicom_study(project, sent.study, configured).files == 12
    assert _held_upstream(stack, sent.study.pseudo_study_uid) == set(order)


def test_a_request_repeated_after_a_503_carries_its_whole_body(
    project, configured, stack, stow_proxy, fresh_study
):
    sent, order = fresh_study(304)
    stow_proxy.unavailable_requests = 1

    plugins.export_dicom_study(project, sent.study, configured)

    # The first request (answered 503) and its repeat, in the next round, both carried
    # the four instances; the rest of the study waited for that round.
    assert stow_proxy.posts == [order[0:4], order[0:4], order[4:8], order[8:12]]
    assert _held_upstream(stack, sent.study.pseudo_study_uid) == set(order)


def test_the_request_body_streams_from_the_zip(tmp_path: Path, make_deidentified_study):
    """20 MB of instances go out through a body that never holds more than a block."""
    template = make_deidentified_study(seed=305, series=1, instances=1).files[0]
    files = []
    for number in range(20):
        ds = pydicom.dcmread(template)
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{number}"
        ds.add_new(0x00091010, "LO", "PIXL")  # private creator
        ds.add_new(0x00091011, "OB", bytes(1024 * 1024))  # 1 MB that compresses away
        path = tmp_path / f"big-{number}.dcm"
        ds.save_as(path)
        files.append(path)
    zip_path = zip_dicom_files(files, tmp_path / "big.zip")
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.namelist()

    body = dicomweb.MultipartBody(zip_path, members)
    tracemalloc.start()
    total = 0
    while block := body.read(8192):
        total += len(block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert total == len(body) > 20 * 1024 * 1024
    assert peak < 2 * 1024 * 1024
