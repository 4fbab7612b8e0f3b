"""The API's front gate: who is asking (401), whether the key's scope allows the route
(403), whether its limits allow it now (429 with Retry-After), all before one byte of the
body is read; then the audit record of every write and admin action, with its result.

Pure ASGI middleware. The internal routes take only the data dir's own worker credential
(never a client key), and the health probes and the metrics are open.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access import needed_scope, scope_problem, set_principal
from app.audit import AuditEntry, AuditLog
from app.keys import (
    OPEN,
    KeyStore,
    KeyStoreUnavailable,
    Principal,
    digest,
    env_principals,
    key_id,
)
from app.limits import send_error
from app.rate_limits import RateLimiter, Verdict

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
INTERNAL_PREFIX = "/v1/internal/"
_UPLOAD_PATH = "/v1/documents"
_KEYS_SEEN_TTL_S = 1.0


@dataclass(frozen=True)
class Identity:
    who: Principal | None
    status: int = 200  # 401 or 503 when `who` is None
    why: str = ""


@dataclass
class AccessControl:
    """The keys (those of QUARRY_API_KEYS, and stored ones), the limits and the audit log."""

    env_keys: frozenset[str]
    store: KeyStore | None = None  # None: a model node, QUARRY_API_KEYS only
    limiter: RateLimiter | None = None
    audit: AuditLog | None = None
    _env: dict[str, Principal] = field(init=False)
    _internal: dict[str, Principal] = field(default_factory=dict)  # this server's own workers
    _stored_seen: tuple[float, bool] = (0.0, False)  # (when asked, any stored keys)

    def __post_init__(self) -> None:
        self._env = env_principals(self.env_keys)

    def worker_key(self) -> str:
        """A key for the workers this server supervises (read: the model's routes), valid
        while it runs; it does not make an open server need keys."""
        token = secrets.token_urlsafe(32)
        self._internal[digest(token)] = Principal(
            id=key_id(token), name="supervised worker", scope="read"
        )
        return token

    def keys_required(self) -> bool:
        """Keys are required once one was ever made (`keys_marker`, in the data dir, and a
        flag in Redis): revoking them all, a flushed Redis or an outage never opens the
        server. Asked at most once a second; an outage keeps the last answer."""
        if self._env:
            return True
        if self.store is None:
            return False
        asked, seen = self._stored_seen
        if time.monotonic() - asked < _KEYS_SEEN_TTL_S:
            return seen
        with contextlib.suppress(KeyStoreUnavailable):
            seen = self.store.required()
        self._stored_seen = (time.monotonic(), seen)
        return seen

    def identify(self, authorization: str | None) -> Identity:
        """The key's principal, or why there is none (401; 503: the key store is down)."""
        if not self.keys_required():
            return Identity(OPEN)
        scheme, _, given = (authorization or "").partition(" ")
        token = given.strip()
        if scheme.lower() != "bearer" or not token:
            return Identity(None, 401, "missing API key: send 'Authorization: Bearer <key>'")
        given_digest = digest(token)
        for known, who in (self._env | self._internal).items():
            if secrets.compare_digest(known, given_digest):
                return Identity(who)
        if self.store is not None:
            try:
                found = self.store.find(token)
            except KeyStoreUnavailable as exc:
                return Identity(None, 503, exc.message)
            if found is not None:
                return Identity(found)
        return Identity(None, 401, "invalid API key")


def _header(scope: Scope, name: bytes) -> str | None:
    raw = dict(scope["headers"]).get(name)
    return raw.decode("latin-1") if raw else None


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        control: Callable[[], AccessControl],
        internal_token: Callable[[], str | None],
    ) -> None:
        self.app = app
        self.control = control
        self.internal_token = internal_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        authorization = _header(scope, b"authorization")
        if path.startswith(INTERNAL_PREFIX):
            problem = self._internal_problem(authorization)
            if problem:
                await send_error(send, 401, "unauthorized", problem, _BEARER)
            else:
                await self.app(scope, receive, send)
            return
        control = self.control()
        identity = await anyio.to_thread.run_sync(control.identify, authorization)
        audit = control.audit if needed_scope(method, path) != "read" else None
        try:
            status, reason = await self._admit(scope, receive, send, control, identity)
        except BaseException:
            if audit is not None:  # a crash, or the client gone: still who did what
                await self._record(audit, scope, identity.who, 500, "failed: see the log")
            raise
        if audit is not None:
            await self._record(audit, scope, identity.who, status, reason)

    @staticmethod
    async def _record(
        audit: AuditLog, scope: Scope, who: Principal | None, status: int, reason: str
    ) -> None:
        entry = AuditEntry(
            at=time.time(),
            key_id=who.id if who else "",
            key_name=who.name if who else "",
            scope=who.scope if who else "",
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            status=status,
            client=(scope.get("client") or ("", 0))[0],
            reason=reason,
        )
        # Requests with no valid key go to the log only: anyone could flood the stream.
        await anyio.to_thread.run_sync(lambda: audit.record(entry, stream=status != 401))

    def _internal_problem(self, authorization: str | None) -> str | None:
        token = self.internal_token()
        if not token:
            return "internal routes are closed: this server serves no worker"
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return None
        return "internal route: send the data dir's worker credential"

    async def _admit(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        control: AccessControl,
        identity: Identity,
    ) -> tuple[int, str]:
        """Refuse, or run the request; the status it got and why it was refused."""
        who, status, why = identity.who, identity.status, identity.why
        if who is None:
            code = "key_store_unavailable" if status == 503 else "unauthorized"
            await send_error(send, status, code, why, _BEARER if status == 401 else [])
            return status, why
        problem = scope_problem(who, scope["method"], scope["path"])
        if problem:
            await send_error(send, 403, "forbidden", problem, [])
            return 403, problem
        verdict = await self._limited(scope, control, who)
        if not verdict.allowed and verdict.status == 413:  # never fits: no use retrying
            await send_error(send, 413, "payload_too_large", verdict.reason, [])
            return 413, verdict.reason
        if not verdict.allowed:
            retry = [(b"retry-after", str(max(1, verdict.retry_after_s)).encode())]
            await send_error(send, 429, "rate_limited", verdict.reason, retry)
            return 429, verdict.reason
        set_principal(scope, who)
        return await self._run(scope, receive, send, control, who)

    async def _limited(self, scope: Scope, control: AccessControl, who: Principal) -> Verdict:
        limiter = control.limiter
        upload = self._is_upload(scope) and bool(who.limits.upload_mb_per_hour)
        if limiter is None or not (who.limits.rps or upload):
            return Verdict(True)  # no limit to ask Redis about: no thread, no round trip
        verdict = await anyio.to_thread.run_sync(limiter.request, who)
        declared = _header(scope, b"content-length") or ""
        if verdict.allowed and upload:
            # Declared: charged before the body is read. Chunked: charged as received, and
            # refused here while an earlier upload's bytes are still over the budget.
            size = int(declared) if declared.isdigit() else 1
            verdict = await anyio.to_thread.run_sync(limiter.upload, who, size)
        return verdict

    @staticmethod
    def _is_upload(scope: Scope) -> bool:
        return scope["method"] == "POST" and scope["path"] == _UPLOAD_PATH

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, control: AccessControl, who: Principal
    ) -> tuple[int, str]:
        status = 500
        received = 0
        chunked = self._is_upload(scope) and not (_header(scope, b"content-length") or "")

        async def counting_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
            return event

        async def status_send(event: Message) -> None:
            nonlocal status
            if event["type"] == "http.response.start":
                status = event["status"]
            await send(event)

        try:
            await self.app(scope, counting_receive if chunked else receive, status_send)
        finally:
            if chunked and received and control.limiter is not None:
                limiter = control.limiter
                await anyio.to_thread.run_sync(lambda: limiter.upload(who, received, force=True))
        return status, ""


_BEARER = [(b"www-authenticate", b"Bearer")]


def access_control(
    env_keys: frozenset[str],
    client: Callable[[], redis.Redis] | None,
    namespace: str,
    audit_max: int,
    marker: Path | None = None,
) -> AccessControl:
    if client is None:
        return AccessControl(env_keys)
    return AccessControl(
        env_keys,
        KeyStore(client, namespace, marker),
        RateLimiter(client, namespace),
        AuditLog(client, namespace, audit_max),
    )
