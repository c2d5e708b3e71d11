"""The `xnat` destination through the real xnat package, against a small HTTPS server of the
test's own answering the REST calls xnat makes: the redirect probe `GET /`, login
`PUT /data/services/auth`, `GET /data/auth`, heartbeat `GET /data/JSESSION`, the project
lookup `GET /data/projects/{id}`, the import service `POST /data/services/import` (409
for an existing session with `overwrite=none`, as XNAT answers), the file listing of a
session's scans `GET /data/projects/{p}/subjects/{s}/experiments/{e}/scans/ALL/files` and
logout `DELETE /data/JSESSION`."""

from __future__ import annotations

import dataclasses
import io
import json
import ssl
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from destination_support import assert_no_identifying_values, free_port

from orthanc_plugins.common.projects import XnatOptions
from pixl_hooks import plugins
from pixl_hooks.types import DestinationMisconfigured, DestinationRejected, DestinationUnavailable

PROJECT = "test-extract-uclh-omop-cdm-xnat"  # xnat; overwrite none; /archive; alias "test"
XNAT_USER = "pixl-xnat"
XNAT_PASSWORD = "xnat-password-789"
JSESSION = "0123456789ABCDEF0123456789ABCDEF"


@dataclasses.dataclass
class FakeXnat:
    port: int
    projects: set[str]
    calls: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    imports: list[dict] = dataclasses.field(default_factory=list)
    sessions: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)  # files
    fail_imports_with: int | None = None


def make_handler(state: FakeXnat):
    class Xnat(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, text: str, content_type="text/plain", cookie=False):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if cookie:
                self.send_header("Set-Cookie", f"JSESSIONID={JSESSION}; Path=/; HttpOnly")
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _logged_in(self) -> bool:
            if f"JSESSIONID={JSESSION}" in self.headers.get("Cookie", ""):
                return True
            self._reply(401, "<html><h3>Login required</h3></html>", "text/html")
            return False

        def _route(self) -> None:
            url = urlparse(self.path)
            state.calls.append((self.command, url.path))
            if (self.command, url.path) == ("GET", "/"):
                self._reply(200, "<html><body>XNAT</body></html>", "text/html")
            elif (self.command, url.path) == ("PUT", "/data/services/auth"):
                form = parse_qs(self._body().decode())
                if form.get("username") == [XNAT_USER] and form.get("password") == [XNAT_PASSWORD]:
                    self._reply(200, JSESSION, cookie=True)
                else:
                    self._reply(401, "<html><h3>Login attempt failed.</h3></html>", "text/html")
            elif not self._logged_in():
                return
            elif (self.command, url.path) == ("GET", "/data/auth"):
                self._reply(200, f"User '{XNAT_USER}' is logged in")
            elif url.path == "/data/JSESSION":
                self._reply(200, JSESSION)
            elif self.command == "GET" and url.path.endswith("/scans/ALL/files"):
                self._files(url.path.split("/"))
            elif self.command == "GET" and url.path.startswith("/data/projects/"):
                project = url.path.split("/")[3]
                if project not in state.projects:
                    self._reply(404, "<html><h3>Not found</h3></html>", "text/html")
                else:
                    self._reply(200, json.dumps({"items": [{
                        "meta": {"xsi:type": "xnat:projectData", "isHistory": False},
                        "data_fields": {"ID": project}}]}), "application/json")
            elif (self.command, url.path) == ("POST", "/data/services/import"):
                self._import(url)
            else:
                self._reply(404, "not found")

        def _import(self, url) -> None:
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            body = self._body()
            if state.fail_imports_with:
                self._reply(state.fail_imports_with, "import failed")
                return
            key = (query["project"], query["subject"], query["session"])
            if query.get("overwrite") == "none" and key in state.sessions:
                self._reply(409, "Session already exists, retry with overwrite enabled")
                return
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                state.sessions[key] = len(archive.namelist())
            state.imports.append({"query": query, "content_type": self.headers["Content-Type"],
                                  "body": body})
            if query.get("dest") == "/prearchive":
                self._reply(200, f"/data/prearchive/projects/{key[0]}/20260101_120000/{key[2]}\r\n")
            else:
                self._reply(200, "/data/archive/projects/{}/subjects/{}/experiments/{}\r\n".format(*key))

        def _files(self, parts: list[str]) -> None:
            # /data/projects/{p}/subjects/{s}/experiments/{e}/scans/ALL/files
            key = (parts[3], parts[5], parts[7])
            if key not in state.sessions:
                self._reply(404, "<html><h3>Not found</h3></html>", "text/html")
                return
            files = [{"Name": f"{n}.dcm", "collection": "DICOM", "file_format": "DICOM"}
                     for n in range(state.sessions[key])]
            self._reply(200, json.dumps({"ResultSet": {"Result": files, "totalRecords": str(len(files))}}),
                        "application/json")

        do_GET = do_PUT = do_POST = do_DELETE = _route

    return Xnat


@pytest.fixture
def fake_xnat(tls_files, project):
    state = FakeXnat(port=0, projects={project.slug})
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.certfile, tls_files.keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(load_fixture_project):
    return load_fixture_project(PROJECT)


@pytest.fixture
def configured(secrets, fake_xnat, tls_files, monkeypatch):
    for field, value in {"host": "127.0.0.1", "port": str(fake_xnat.port), "username": XNAT_USER,
                         "password": XNAT_PASSWORD}.items():
        secrets.set(f"test--xnat--{field}", value)
    # How an operator trusts a private CA for XNAT (xnat.connect reads only the environment).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.certfile))
    return secrets


def test_study_is_imported_as_a_dicom_zip_into_project_subject_session(
    project, configured, fake_xnat, make_deidentified_study
):
    sent = make_deidentified_study(seed=11)

    receipt = plugins.export_dicom_study(project, sent.study, configured)

    [imported] = fake_xnat.imports
    session = sent.study.pseudo_study_uid.replace(".", "_")
    assert imported["query"] == {
        "import-handler": "DICOM-zip", "project": project.slug,
        "subject": sent.study.pseudo_patient_id, "session": session,
        "overwrite": "none", "dest": "/archive",
    }
    assert imported["content_type"] == "application/zip"
    assert imported["body"] == sent.study.zip_path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(imported["body"])) as archive:
        members = [archive.read(name) for name in archive.namelist()]
    assert len(members) == 4 == receipt.files
    for member in members:
        assert_no_identifying_values(member, sent.identifying)
    assert receipt.location == (f"/data/archive/projects/{project.slug}/subjects/"
                                f"{sent.study.pseudo_patient_id}/experiments/{session}")
    assert fake_xnat.calls[:3] == [("GET", "/"), ("PUT", "/data/services/auth"), ("GET", "/data/auth")]
    assert ("GET", f"/data/projects/{project.slug}") in fake_xnat.calls
    assert fake_xnat.calls[-1] == ("DELETE", "/data/JSESSION")  # logged out


def test_prearchive_and_append_options_are_sent(project, configured, fake_xnat, make_deidentified_study):
    review = dataclasses.replace(project, xnat_options=XnatOptions(overwrite="append",
                                                                   destination="/prearchive"))
    sent = make_deidentified_study(seed=12)

    receipt = plugins.export_dicom_study(review, sent.study, configured)
    plugins.export_dicom_study(review, sent.study, configured)  # append: accepted again

    assert [(i["query"]["overwrite"], i["query"]["dest"]) for i in fake_xnat.imports] == \
        [("append", "/prearchive")] * 2
    assert receipt.location.startswith(f"/data/prearchive/projects/{project.slug}/")


def test_exporting_again_into_an_existing_session_is_success(
    project, configured, fake_xnat, make_deidentified_study
):
    """A crash after XNAT's answer and before PIXL recorded it: the export is repeated,
    XNAT answers 409 (overwrite none) and the study, already whole there, counts as done."""
    sent = make_deidentified_study(seed=13)
    first = plugins.export_dicom_study(project, sent.study, configured)

    again = plugins.export_dicom_study(project, sent.study, configured)

    session = sent.study.pseudo_study_uid.replace(".", "_")
    assert again.location == first.location.strip() and again.files == 4
    assert len(fake_xnat.imports) == 1  # the second import was refused, nothing duplicated
    assert ("GET", f"/data/projects/{project.slug}/subjects/{sent.study.pseudo_patient_id}"
                   f"/experiments/{session}/scans/ALL/files") in fake_xnat.calls


def test_an_existing_session_missing_instances_is_refused_and_left_alone(
    project, configured, fake_xnat, make_deidentified_study
):
    sent = make_deidentified_study(seed=16)
    plugins.export_dicom_study(project, sent.study, configured)
    [key] = fake_xnat.sessions
    fake_xnat.sessions[key] = 3  # one instance of four lost at the destination

    with pytest.raises(DestinationRejected, match="holding 3 of the 4 instances") as caught:
        plugins.export_dicom_study(project, sent.study, configured)
    assert not caught.value.retryable
    assert fake_xnat.sessions[key] == 3 and len(fake_xnat.imports) == 1


def test_a_project_missing_in_xnat_is_a_configuration_problem(
    project, configured, fake_xnat, make_deidentified_study
):
    fake_xnat.projects.clear()

    with pytest.raises(DestinationMisconfigured, match=f"XNAT has no project '{project.slug}'"):
        plugins.export_dicom_study(project, make_deidentified_study().study, configured)
    assert fake_xnat.imports == []


def test_wrong_password_is_rejected_without_showing_it(project, configured, make_deidentified_study):
    configured.set("test--xnat--password", "wrong-xnat-password")

    with pytest.raises(DestinationRejected, match="login refused") as caught:
        plugins.export_dicom_study(project, make_deidentified_study().study, configured)
    shown = str(caught.value) + repr(caught.value.__context__) + repr(caught.value.__cause__)
    assert "wrong-xnat-password" not in shown and XNAT_USER not in shown


def test_server_errors_and_outages_are_retryable(project, configured, fake_xnat, make_deidentified_study):
    fake_xnat.fail_imports_with = 503
    with pytest.raises(DestinationUnavailable, match=r"HTTP 503") as caught:
        plugins.export_dicom_study(project, make_deidentified_study(seed=14).study, configured)
    assert caught.value.retryable

    configured.set("test--xnat--port", str(free_port()))
    with pytest.raises(DestinationUnavailable, match="server unreachable"):
        plugins.export_dicom_study(project, make_deidentified_study(seed=15).study, configured)


def test_an_untrusted_certificate_is_refused(project, configured, make_deidentified_study, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")

    with pytest.raises(DestinationMisconfigured, match="certificate is not trusted"):
        plugins.export_dicom_study(project, make_deidentified_study().study, configured)


def test_check_names_missing_secrets(project, secrets):
    assert plugins.check_project_destinations(project, secrets) == [
        f"secret 'test--xnat--{field}' is not set" for field in ("host", "port", "username", "password")
    ]
