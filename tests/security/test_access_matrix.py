"""Role x endpoint on the real stack: who may do what on raw and anon (SECURITY.md).

Every row is a real HTTPS request to raw or anon through PIXL's request filter;
"refused" is Orthanc's 403 from the filter, anything else means the filter let
the request through (the status then is Orthanc's or the plugin's answer).
"""

from __future__ import annotations

import json

import pytest
import requests

pytestmark = pytest.mark.stack

REFUSED = 403
ROLES = ("anonymous", "viewer", "operator", "admin", "service")


def by_role(anonymous: int, viewer: int, operator: int, admin: int, service: int) -> dict[str, int]:
    """The expected status for each role, in the order of ROLES."""
    return dict(zip(ROLES, (anonymous, viewer, operator, admin, service), strict=True))


# (node, method, path, body, expected status by role); {study} and {instance} are
# the Orthanc IDs of the generated study in raw.
MATRIX = [
    ("raw", "GET", "/app/explorer.html", None, by_role(200, 200, 200, 200, 200)),
    ("raw", "GET", "/system", None, by_role(REFUSED, 200, 200, 200, 200)),
    ("raw", "GET", "/pixl/extracts", None, by_role(REFUSED, 200, 200, 200, REFUSED)),
    ("raw", "PUT", "/pixl/controls", "controls", by_role(REFUSED, REFUSED, 200, 200, REFUSED)),
    ("raw", "GET", "/pixl/audit", None, by_role(REFUSED, REFUSED, REFUSED, 200, REFUSED)),
    ("raw", "GET", "/patients", None, by_role(REFUSED, REFUSED, REFUSED, 200, REFUSED)),
    ("raw", "GET", "/studies/{study}/archive", None, by_role(REFUSED, REFUSED, REFUSED, 200, REFUSED)),
    ("raw", "GET", "/instances/{instance}/tags", None, by_role(REFUSED, REFUSED, REFUSED, 200, REFUSED)),
    ("raw", "GET", "/instances/{instance}/preview", None, by_role(REFUSED, REFUSED, REFUSED, 200, REFUSED)),
    ("raw", "GET", "/instances/{instance}/file", None, by_role(REFUSED, REFUSED, REFUSED, 200, 200)),
    ("raw", "GET", "/studies/{study}/series", None, by_role(REFUSED, REFUSED, REFUSED, 200, 200)),
    ("raw", "POST", "/modalities/vna/echo", "{}", by_role(REFUSED, REFUSED, REFUSED, 200, REFUSED)),
    ("anon", "GET", "/studies", None, by_role(REFUSED, 200, 200, 200, REFUSED)),
    ("anon", "POST", "/tools/find", '{"Level": "Study", "Query": {}}', by_role(REFUSED, 200, 200, 200, REFUSED)),
    # The service user deletes anon's copies once kept long enough (anon/copies.py).
    ("anon", "DELETE", "/studies/0000000000000000000000000000000000000000", None, by_role(REFUSED, REFUSED, REFUSED, 404, 404)),
    ("anon", "POST", "/pixl/studies", "{}", by_role(REFUSED, REFUSED, REFUSED, 400, 400)),
    ("anon", "GET", "/pixl/health", None, by_role(REFUSED, 200, 200, 200, 200)),
]

CASES = [
    pytest.param(node, method, path, body, role, expected[role], id=f"{node} {method} {path} as {role}")
    for node, method, path, body, expected in MATRIX for role in ROLES
]


@pytest.mark.parametrize(("node", "method", "path", "body", "role", "expected"), CASES)
def test_role_matrix(stack, credentials, raw_study, node, method, path, body, role, expected):
    settings = stack.settings
    base = getattr(settings, node).url
    if body == "controls":  # put back what is there: the request matters, not the change
        current = requests.get(base + "/pixl/controls", auth=settings.orthanc_auth, timeout=10).json()
        body = json.dumps({"paused": current["paused"]})
    url = base + path.format(study=raw_study.orthanc_id, instance=raw_study.instance_id)
    response = requests.request(method, url, data=body, auth=credentials.of(role), timeout=30)
    assert response.status_code == expected


def test_the_login_route_asks_a_browser_for_credentials(stack, credentials):
    """Orthanc Explorer's plugin script calls /pixl-login first: a 401 with a basic
    challenge makes the browser prompt, and then send the credentials everywhere."""
    raw = stack.settings.raw.url
    challenge = requests.get(raw + "/pixl-login", timeout=10)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith("Basic realm=")
    wrong = requests.get(raw + "/pixl-login", auth=(credentials.viewer[0], "wrong-password!"), timeout=10)
    assert wrong.status_code == 401
    signed_in = requests.get(raw + "/pixl-login", auth=credentials.viewer, timeout=10)
    assert signed_in.json() == {"user": credentials.viewer[0], "role": "viewer"}
    script = requests.get(raw + "/plugins/explorer.js", timeout=10).text
    assert 'request.open("GET", "../pixl-login", false)' in script
