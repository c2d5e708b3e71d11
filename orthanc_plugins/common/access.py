"""Who may do what on raw and anon, and the access audit (SECURITY.md).

Orthanc's own users are off (`AuthenticationEnabled: false`, no clear-text
`RegisteredUsers`): the plugins register an incoming-request filter that
authenticates HTTP basic credentials against the users of the secret store
(secret `pixl-users`, scrypt hashes) and decides by role and route. raw and
anon talk to each other as the service user `pixl-service`, whose random
password lives in the secret store (`pixl-service-password`).

The filter runs for every HTTP request, in Python, and anon fetches hundreds
of instances a second from raw: a verified credential is cached for a minute
(keyed by a digest of the header), so scrypt runs once per user and minute,
and deciding a route is one scan of a few compiled expressions. Audit records
go to a queue that a writer thread empties into PostgreSQL in batches.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import hmac
import json
import logging
import queue
import re
import secrets as random_source
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from orthanc_plugins.common import db
from orthanc_plugins.common.plugin_support import ApiError, ApiRequest, ApiResponse, safe_traceback
from orthanc_plugins.common.secrets import (
    SecretsError,
    SecretStore,
    find_secret,
    get_or_create,
    new_key,
)
from orthanc_plugins.common.settings import Settings

logger = logging.getLogger(__name__)

ADMIN, OPERATOR, VIEWER, SERVICE = "admin", "operator", "viewer", "service"
HUMAN_ROLES = (ADMIN, OPERATOR, VIEWER)
EVERYONE = (ADMIN, OPERATOR, VIEWER, SERVICE)
ANYONE = "anyone"  # no credentials needed: the web UI's static files and the login challenge
USERS_SECRET = "pixl-users"
SERVICE_USER = "pixl-service"
SERVICE_PASSWORD_SECRET = "pixl-service-password"
LOGIN_PATH = "/pixl-login"
REALM = "PIXL"

# Prepended to Orthanc Explorer's plugin script: a synchronous request to the login
# route before the explorer calls the REST API, so that the browser shows its
# basic-auth prompt (a 403 from the filter would not) and then sends the
# credentials with every request below "/".
LOGIN_SCRIPT = f"""// PIXL: sign in (HTTP basic) before Orthanc Explorer calls the REST API.
(function () {{
  var request = new XMLHttpRequest();
  request.open("GET", "..{LOGIN_PATH}", false);
  request.send();
}})();
"""

CREDENTIAL_CACHE_SECONDS = 60.0
USERS_RELOAD_SECONDS = 10.0
# Orthanc's HttpMethod enumeration, as the request filter receives it.
HTTP_METHODS = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE"}

# --- passwords ------------------------------------------------------------------------------

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$digest` (hex), from the standard library's hashlib.scrypt."""
    salt = random_source.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded` (hash_password's format), in constant time."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        actual = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# --- users ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str


def load_users(store: SecretStore) -> dict[str, User]:
    """The users of the secret store: `pixl-users` = {name: {"role": ..., "password": hash}}."""
    text = find_secret(store, USERS_SECRET)
    if text is None:
        return {}
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SecretsError(f"secret {USERS_SECRET!r} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(entries, dict):
        raise SecretsError(f"secret {USERS_SECRET!r} must be a JSON object of user -> entry")
    users = {}
    for name, entry in entries.items():
        role = entry.get("role") if isinstance(entry, dict) else None
        password = entry.get("password") if isinstance(entry, dict) else None
        if role not in HUMAN_ROLES or not isinstance(password, str) or not password.startswith("scrypt$"):
            raise SecretsError(
                f"secret {USERS_SECRET!r}: user {name!r} needs a role ({', '.join(HUMAN_ROLES)})"
                " and a scrypt password hash (pixl-keys user-set)"
            )
        users[name] = User(name, role, password)
    return users


def set_user(store: SecretStore, name: str, role: str, password: str) -> None:
    """Add a user or change its role and password (the password is stored hashed)."""
    if role not in HUMAN_ROLES:
        raise ValueError(f"role must be one of {', '.join(HUMAN_ROLES)}, got {role!r}")
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name) or name == SERVICE_USER:
        raise ValueError(f"invalid user name {name!r}: 1-64 letters, digits and . _ @ -"
                         f" ({SERVICE_USER} is reserved)")
    if len(password) < 12:
        raise ValueError("a password needs at least 12 characters")
    users = {u.name: {"role": u.role, "password": u.password_hash} for u in load_users(store).values()}
    users[name] = {"role": role, "password": hash_password(password)}
    store.set(USERS_SECRET, json.dumps(users, sort_keys=True))


def ensure_admin(store: SecretStore, settings: Settings) -> None:
    """The deployment's first user (ORTHANC_USERNAME / ORTHANC_PASSWORD) is an admin,
    stored hashed like every user; the native stack and the containers call this."""
    name, password = settings.orthanc_username, settings.orthanc_password
    user = load_users(store).get(name)
    if user is None or user.role != ADMIN or not verify_password(password, user.password_hash):
        set_user(store, name, ADMIN, password)


def remove_user(store: SecretStore, name: str) -> bool:
    users = {u.name: {"role": u.role, "password": u.password_hash} for u in load_users(store).values()}
    if users.pop(name, None) is None:
        return False
    store.set(USERS_SECRET, json.dumps(users, sort_keys=True))
    return True


def service_password(store: SecretStore) -> str:
    """The service user's password, made on first use and shared by raw and anon."""
    return get_or_create(store, SERVICE_PASSWORD_SECRET, new_key)


def service_settings(settings: Settings, store: SecretStore) -> Settings:
    """The settings a plugin runs with: it calls the other server as the service user."""
    return dataclasses.replace(settings, orthanc_username=SERVICE_USER,
                               orthanc_password=service_password(store))


@dataclass(frozen=True)
class Identity:
    user: str
    role: str


class Authenticator:
    """Basic credentials -> Identity, with a short cache of verified (and refused) headers."""

    def __init__(self, store: SecretStore, *, clock: Callable[[], float] = time.monotonic,
                 cache_seconds: float = CREDENTIAL_CACHE_SECONDS):
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._service_password = service_password(store)
        self._users: dict[str, User] = load_users(store)
        self._users_loaded = clock()
        self._cache: dict[bytes, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def identify(self, authorization: str | None) -> Identity | None:
        if not authorization:
            return None
        key = hashlib.sha256(authorization.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        identity, cacheable = self._verify(authorization, now)
        if not cacheable:
            return identity
        with self._lock:
            if len(self._cache) > 10_000:  # a flood of wrong passwords must not grow memory
                self._cache.clear()
            self._cache[key] = (now + self._cache_seconds, identity)
        return identity

    def _verify(self, authorization: str, now: float) -> tuple[Identity | None, bool]:
        """(who, whether to cache the answer): a name not known (yet) is not cached,
        so that a user added to the store is accepted at the next reload."""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None, True
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, True
        if not sep:
            return None, True
        if user == SERVICE_USER:
            ok = hmac.compare_digest(password.encode(), self._service_password.encode())
            return (Identity(SERVICE_USER, SERVICE) if ok else None), True
        if now - self._users_loaded > USERS_RELOAD_SECONDS:
            try:
                self._users, self._users_loaded = load_users(self._store), now
            except SecretsError as exc:  # keep the users we have
                logger.error("cannot reload the users: %s", exc)
        known = self._users.get(user)
        if known is None:
            return None, False
        if not verify_password(password, known.password_hash):
            return None, True
        return Identity(known.name, known.role), True


# --- routes ---------------------------------------------------------------------------------

_ID = r"[0-9a-f-]{8,}"


@dataclass(frozen=True)
class Rule:
    """Requests of `methods` whose path matches `path` are for `roles`; `audited`:
    recorded in the access audit (raw: identifiable data and changes)."""

    methods: frozenset[str]
    path: re.Pattern[str]
    roles: tuple[str, ...] | str
    audited: bool = False
    audit_roles: tuple[str, ...] = HUMAN_ROLES  # whose allowed requests are recorded


def rule(methods: str, path: str, roles: tuple[str, ...] | str, audited: bool = False,
         audit_roles: tuple[str, ...] = HUMAN_ROLES) -> Rule:
    return Rule(frozenset(methods.split()), re.compile(path), roles, audited, audit_roles)


_ALL = "GET POST PUT DELETE"
_CHANGES = "POST PUT DELETE"
_PUBLIC = [
    # Orthanc Explorer's static files and the login challenge: nothing in them is data.
    rule("GET", r"/(app/.*|favicon\.ico|plugins/explorer\.js)?", ANYONE),
    rule("GET", re.escape(LOGIN_PATH), ANYONE),
    rule("GET", r"/(system|pixl/health)", EVERYONE),
]
# What anon reads from raw, as the service user (pipeline.py): the study's series and
# instances, and each instance's file. Study-level reads are audited for everyone; the
# service user's per-instance reads are not (one record per study, not per instance).
_SERVICE_READS = [
    rule("GET", rf"/(studies|series)/{_ID}(/(series|instances))?", (ADMIN, SERVICE), audited=True,
         audit_roles=EVERYONE),
    rule("GET", rf"/instances/{_ID}/file", (ADMIN, SERVICE), audited=True),
]
RAW_RULES = [
    *_PUBLIC,
    *_SERVICE_READS,
    rule("GET", r"/pixl/audit", (ADMIN,)),
    rule("GET", r"/pixl/.*", HUMAN_ROLES),
    # Loading, controls, retry, cancel, export: pixl-tui's changes, recorded.
    rule(_CHANGES, r"/pixl/.*", (ADMIN, OPERATOR), audited=True),
    # Everything else of Orthanc on raw reads or sends identifiable data: admins only.
    rule(_ALL, r"/.*", (ADMIN,), audited=True),
]
ANON_RULES = [
    *_PUBLIC,
    rule("POST", r"/pixl/studies", (ADMIN, SERVICE)),
    # anon's own copies for its web UI (anon/copies.py): stored, and deleted once kept long enough.
    rule("POST", r"/instances", (ADMIN, SERVICE)),
    rule("DELETE", rf"/(studies|instances)/{_ID}", (ADMIN, SERVICE)),
    rule("GET", r"/pixl/.*", HUMAN_ROLES),
    # Read-only Orthanc Explorer: every GET, and the explorer's searches.
    rule("GET", r"/.*", HUMAN_ROLES),
    rule("POST", r"/tools/(find|lookup)", HUMAN_ROLES),
    rule(_ALL, r"/.*", (ADMIN,)),
]
RULES = {"raw": RAW_RULES, "anon": ANON_RULES}


def find_rule(rules: Iterable[Rule], method: str, path: str) -> Rule | None:
    return next((r for r in rules if method in r.methods and r.path.fullmatch(path)), None)


def audited_resource(path: str) -> str:
    """The IDs of a path, for the audit: Orthanc's internal IDs and PIXL's job IDs
    and names. A patient's Orthanc ID is left out: it is a hash of the MRN."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "patients":
        return ""
    return "/".join(parts[1:])


def action_name(method: str, path: str) -> str:
    """`GET /studies/{id}/archive`: the route, with its IDs taken out."""
    return f"{method} " + re.sub(rf"/{_ID}(?=/|$)", "/{id}", re.sub(r"/\d+(?=/|$)", "/{n}", path))


# --- the audit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    at: datetime.datetime
    node: str
    username: str
    role: str
    action: str
    resource: str
    allowed: bool


class AuditWriter:
    """A queue of audit records and the thread that writes them, in batches.

    `stop()` writes everything still queued before it returns; `flush()` waits
    until what was queued so far is in the database."""

    BATCH = 500

    def __init__(self, settings: Settings, purge_interval: float = 3600.0):
        self._settings = settings
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(maxsize=100_000)
        self._purge_interval = purge_interval
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pixl-audit-writer", daemon=True)
            self._thread.start()

    def record(self, entry: AuditRecord) -> None:
        self._queue.put(entry)

    def flush(self) -> None:
        if self._thread is not None:
            self._queue.join()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        last_purge = 0.0
        stopping = False
        while not stopping:
            batch: list[AuditRecord] = []
            entry = self._queue.get()
            taken = 1
            while True:
                if entry is None:
                    stopping = True
                else:
                    batch.append(entry)
                if len(batch) >= self.BATCH:
                    break
                try:
                    entry = self._queue.get_nowait()
                    taken += 1
                except queue.Empty:
                    break
            try:
                self._write(batch)
                if time.monotonic() - last_purge > self._purge_interval:
                    purge_audit(self._settings)
                    last_purge = time.monotonic()
            except Exception as exc:
                # The records are kept in the log's place: say how many were lost, never what.
                logger.error("access audit: %d records not written: %s", len(batch), safe_traceback(exc))
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    def _write(self, batch: list[AuditRecord]) -> None:
        if not batch:
            return
        for attempt in range(3):
            try:
                with db.connect(self._settings) as conn, conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO access_audit (at, node, username, role, action, resource, allowed)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [(r.at, r.node, r.username, r.role, r.action, r.resource, r.allowed) for r in batch],
                    )
                return
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(1)


def purge_audit(settings: Settings) -> int:
    """Delete audit records older than the retention (0 keeps them for ever)."""
    if settings.audit_retention_days <= 0:
        return 0
    with db.connect(settings) as conn:
        return conn.execute(
            "DELETE FROM access_audit WHERE at < now() - make_interval(days => %s)",
            (settings.audit_retention_days,),
        ).rowcount


AUDIT_FILTERS = ("user", "action", "since", "until", "allowed", "limit")


def audit_api(settings: Settings, writer: AuditWriter | None, request: ApiRequest) -> ApiResponse:
    """GET /pixl/audit?user=&action=&since=&until=&allowed=&limit=: newest first."""
    if request.method != "GET":
        raise ApiError(405, "the audit is read-only")
    if writer is not None:
        writer.flush()
    unknown = sorted(set(request.query) - set(AUDIT_FILTERS))
    if unknown:
        raise ApiError(400, f"unknown audit filter {unknown[0]!r}; use {', '.join(AUDIT_FILTERS)}")
    clauses: list[str] = []
    values: list[Any] = []
    query = request.query
    if query.get("user"):
        clauses.append("username = %s")
        values.append(query["user"])
    if query.get("action"):
        clauses.append("action ILIKE %s")
        values.append(f"%{query['action']}%")
    for name, operator in (("since", ">="), ("until", "<")):
        if query.get(name):
            try:
                values.append(datetime.datetime.fromisoformat(query[name]))
            except ValueError as exc:
                raise ApiError(400, f"{name} must be an ISO date or time, got {query[name]!r}") from exc
            clauses.append(f"at {operator} %s")
    if query.get("allowed"):
        if query["allowed"] not in ("yes", "no"):
            raise ApiError(400, "allowed must be yes or no")
        clauses.append("allowed = %s")
        values.append(query["allowed"] == "yes")
    try:
        limit = min(int(query.get("limit", "200")), 10_000)
    except ValueError as exc:
        raise ApiError(400, "limit must be an integer") from exc
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    with db.connect(settings) as conn:
        rows = conn.execute(
            "SELECT at, node, username, role, action, resource, allowed FROM access_audit"
            f"{where} ORDER BY at DESC, id DESC LIMIT %s", (*values, limit),
        ).fetchall()
    keys = ("at", "node", "user", "role", "action", "resource", "allowed")
    return ApiResponse(200, {"records": [dict(zip(keys, row, strict=True)) for row in rows]})


# --- the filter -----------------------------------------------------------------------------


class AccessFilter:
    """Orthanc's incoming-HTTP-request filter: `filter(uri, **request) -> bool`.

    Refused requests get Orthanc's 403; the login route answers 401 with a
    basic-auth challenge, so that a browser asks for credentials."""

    def __init__(self, node: str, authenticator: Authenticator, audit: AuditWriter | None):
        self.node = node
        self.rules = RULES[node]
        self.authenticator = authenticator
        self.audit = audit

    def decide(self, method: str, path: str, authorization: str | None) -> tuple[bool, Identity | None]:
        found = find_rule(self.rules, method, path)
        if found is not None and found.roles == ANYONE:
            return True, None
        identity = self.authenticator.identify(authorization)
        allowed = found is not None and identity is not None and identity.role in found.roles
        if self.audit is not None and (not allowed or (found and found.audited
                                                        and identity and identity.role in found.audit_roles)):
            self.audit.record(AuditRecord(
                at=datetime.datetime.now(datetime.UTC), node=self.node,
                username=identity.user if identity else "", role=identity.role if identity else "",
                action=action_name(method, path), resource=audited_resource(path), allowed=allowed,
            ))
        return allowed, identity

    def __call__(self, uri: str, **request: Any) -> bool:
        try:
            method = HTTP_METHODS.get(int(request.get("method") or 0), "OTHER")
            headers = request.get("headers") or {}
            return self.decide(method, uri.split("?", 1)[0], headers.get("authorization"))[0]
        except Exception as exc:  # refuse rather than let an error through
            logger.error("access filter: %s", safe_traceback(exc))
            return False

    def login(self, output: Any, uri: str, **request: Any) -> None:
        """GET /pixl-login: who you are, or a basic-auth challenge."""
        identity = self.authenticator.identify((request.get("headers") or {}).get("authorization"))
        if identity is None:
            output.SendUnauthorized(REALM)
            return
        output.AnswerBuffer(json.dumps({"user": identity.user, "role": identity.role}), "application/json")
