"""What went wrong, told apart: an outage (not the study's fault) or a fault of the study.

Every exception raised while a job is worked on ends here (`classify`), so
that no failure retries silently and none names a patient: PIXL's own
exceptions carry no identifying values and are quoted; another library's
message may quote a value it choked on (a name, a date), so it is named by
its type and, for system and TLS errors, by their code only.
"""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass

import psycopg
import requests

from orthanc_plugins.common.orthanc_api import OrthancError

# System errors that say the machine or the network is in trouble, not the study.
_OUTAGE_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
    errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE,
    errno.EAGAIN,
})


@dataclass(frozen=True)
class Failure:
    reason: str  # for operators and the database: names no patient, no secret
    outage: bool  # True: something PIXL depends on is away; the study waits, no attempt counted
    terminal: bool = False  # True: no retry can help (a refused or misconfigured destination)


def describe(exc: BaseException) -> str:
    """A message about `exc` that is safe to log and store."""
    own = exc.__class__.__module__.split(".")[0] in ("orthanc_plugins", "pixl_hooks")
    if own:
        return str(exc)[:300]
    if isinstance(exc, ssl.SSLError):
        return f"{type(exc).__name__} {getattr(exc, 'reason', None) or ''}".strip()
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return f"{type(exc).__name__} {errno.errorcode[exc.errno]}"
    return type(exc).__name__


def _is_outage(exc: BaseException) -> bool:
    # Destinations say themselves whether trying later may help.
    retryable = getattr(exc, "retryable", None)
    if retryable is not None and exc.__class__.__module__.startswith("pixl_hooks"):
        return bool(retryable)
    if getattr(exc, "outage", False):
        return True
    if isinstance(exc, OrthancError):
        return exc.unreachable or (exc.status is not None and (exc.status >= 500 or exc.status == 429))
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, psycopg.OperationalError,
                        ssl.SSLError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    if isinstance(exc, OSError) and exc.errno in _OUTAGE_ERRNOS:
        return True
    # dicomweb-client gives up on 429/503 with its retry library's RetryError.
    return type(exc).__name__ == "RetryError"


def classify(exc: BaseException) -> Failure:
    outage = _is_outage(exc)
    terminal = (not outage and getattr(exc, "retryable", None) is False
                and exc.__class__.__module__.startswith("pixl_hooks"))
    return Failure(describe(exc), outage=outage, terminal=terminal)
