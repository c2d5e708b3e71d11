"""How PIXL code talks to an Orthanc server, inside or outside it.

Logic modules take an `OrthancApi` and never import `orthanc`. Inside a plugin
the entry module passes an adapter over `orthanc.RestApi*` (see
`orthanc_plugins/raw/plugin.py`); outside Orthanc (tests, tools) `HttpOrthanc`
talks to a running server over HTTP. Both raise `OrthancError` on failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import requests
import urllib3

from orthanc_plugins.common.http_session import idle_limited_session
from orthanc_plugins.common.settings import load_settings


class OrthancError(RuntimeError):
    """A call to Orthanc's REST API failed: `status` is the HTTP status it answered
    (None if it answered none), `unreachable` says it could not be reached at all."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False):
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


class OrthancApi(Protocol):
    def get(self, uri: str) -> bytes: ...

    def post(self, uri: str, body: bytes) -> bytes: ...

    def put(self, uri: str, body: bytes) -> bytes: ...

    def delete(self, uri: str) -> None: ...


def get_json(api: OrthancApi, uri: str) -> Any:
    return json.loads(api.get(uri))


def post_json(api: OrthancApi, uri: str, payload: Any) -> Any:
    answer = api.post(uri, json.dumps(payload).encode())
    return json.loads(answer) if answer.strip() else None


def find_study(api: OrthancApi, study_uid: str) -> str | None:
    """The Orthanc ID of the study with this StudyInstanceUID, or None."""
    found = json.loads(api.post("/tools/lookup", study_uid.encode()))  # a plain-text body
    return next((item["ID"] for item in found if item["Type"] == "Study"), None)


class HttpOrthanc:
    """`OrthancApi` over HTTP, for code that runs outside an Orthanc process."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 60,
                 verify: str | bool | None = None):
        """`verify`: a CA bundle (or True, the system's CAs); by default the
        settings' `PIXL_TLS_CA_BUNDLE`."""
        self.url = url.rstrip("/")
        self._session = idle_limited_session()
        self._session.auth = auth
        # DICOM barely compresses, and between our own servers gzip only burns both CPUs.
        self._session.headers["Accept-Encoding"] = "identity"
        # Given with each request: requests lets REQUESTS_CA_BUNDLE override a session's
        # `verify` (psf/requests#3829).
        self._verify = load_settings().http_verify if verify is None else verify
        self._timeout = timeout

    def _request(self, method: str, uri: str, body: bytes | None = None, *, stream: bool = False):
        try:
            response = self._session.request(
                method, self.url + uri, data=body, timeout=self._timeout, stream=stream,
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise OrthancError(f"{method} {uri} on {self.url} failed: {type(exc).__name__}",
                               unreachable=True) from exc
        if response.status_code >= 400:
            response.close()
            raise OrthancError(f"{method} {uri} on {self.url} answered HTTP {response.status_code}",
                               status=response.status_code)
        return response

    def _call(self, method: str, uri: str, body: bytes | None = None) -> bytes:
        # One read of the whole answer: `.content` reads 10 KB at a time, a cost
        # per chunk that adds up over hundreds of 0.5 MB instances a second.
        with self._request(method, uri, body, stream=True) as response:
            try:
                return response.raw.read(decode_content=True)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise OrthancError(f"{method} {uri} on {self.url} broke off: {type(exc).__name__}",
                                   unreachable=True) from exc

    def download(self, uri: str, path: Path, chunk_bytes: int = 1 << 20) -> Path:
        """Stream an answer (a study archive) to a file: never held whole in memory."""
        with self._request("GET", uri, stream=True) as response, path.open("wb") as out:
            try:
                for chunk in response.iter_content(chunk_bytes):
                    out.write(chunk)
            except requests.RequestException as exc:
                raise OrthancError(f"GET {uri} on {self.url} broke off: {type(exc).__name__}",
                                   unreachable=True) from exc
        return path

    def get(self, uri: str) -> bytes:
        return self._call("GET", uri)

    def post(self, uri: str, body: bytes) -> bytes:
        return self._call("POST", uri, body)

    def put(self, uri: str, body: bytes) -> bytes:
        return self._call("PUT", uri, body)

    def delete(self, uri: str) -> None:
        self._call("DELETE", uri)
