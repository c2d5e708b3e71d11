"""Container health check: exit 0 only if `/pixl/health` answers `"healthy": true`.

Authenticates with the Orthanc credentials of the PIXL settings; prints a
one-line reason for `docker inspect`, never the credentials.
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
import urllib.error
import urllib.request

from orthanc_plugins.common.settings import load_settings


def check(url: str, username: str, password: str, timeout: float = 4.0,
          ca_bundle: str | None = None) -> tuple[bool, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    context = ssl.create_default_context(cafile=ca_bundle) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if answer.get("healthy") is True:
        return True, "healthy"
    return False, f"unhealthy: database {answer.get('database')!r}"


def main(argv: list[str]) -> int:
    settings = load_settings()
    # Through the node's HTTPS front when there is one (a front that died makes the
    # container unhealthy), verified with the deployment's CA; the container gives
    # raw and anon the same ports (docker-compose.yml).
    node = settings.raw
    url = argv[1] if len(argv) > 1 else (
        f"{'https' if node.tls else 'http'}://127.0.0.1:{node.http_port}/pixl/health")
    ca_bundle = str(settings.tls_ca_bundle) if settings.tls_ca_bundle else None
    healthy, reason = check(url, *settings.orthanc_auth, ca_bundle=ca_bundle)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
