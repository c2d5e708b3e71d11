"""Container health check: exit 0 only if `/pixl/health` answers `"healthy": true`.

Authenticates with the Orthanc credentials of the PIXL settings; prints a
one-line reason for `docker inspect`, never the credentials.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request

from orthanc_plugins.common.settings import load_settings

DEFAULT_URL = "http://127.0.0.1:8042/pixl/health"


def check(url: str, username: str, password: str, timeout: float = 4.0) -> tuple[bool, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if answer.get("healthy") is True:
        return True, "healthy"
    return False, f"unhealthy: database {answer.get('database')!r}"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    healthy, reason = check(url, *load_settings().orthanc_auth)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
