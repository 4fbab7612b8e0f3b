"""Guards that act before a request body is read: the API key, and body size limits.

Both are pure ASGI middleware. A client without a valid key gets 401 before one byte of
its body is read, and a body is counted as it arrives (declared length or chunked), so
no more than the limit is ever spooled to memory or disk: past it the answer is 413.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body


async def _send_error(
    send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def key_problem(authorization: str | None, keys: frozenset[str]) -> str | None:
    """Why a request may not pass (None: it may). The one place keys are checked."""
    if not keys:
        return None
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "missing API key: send 'Authorization: Bearer <key>'"
    token = given.strip().encode()
    if not any(secrets.compare_digest(token, key.encode()) for key in keys):
        return "invalid API key"
    return None


PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
INTERNAL_PREFIX = "/v1/internal/"


class ApiKeyGuard:
    """Deny by default: with keys set, every route but the health probes and the metrics
    needs a valid bearer key (401 before the body is read). The internal routes take only
    the data dir's own worker credential (`internal_token`), never a client key, keys set
    or not."""

    def __init__(
        self, app: ASGIApp, keys: frozenset[str], internal_token: Callable[[], str | None]
    ) -> None:
        self.app = app
        self.keys = keys
        self.internal_token = internal_token

    def _problem(self, path: str, authorization: str | None) -> str | None:
        if path.startswith(INTERNAL_PREFIX):
            token = self.internal_token()
            if not token:
                return "internal routes are closed: this server serves no worker"
            problem = key_problem(authorization, frozenset({token}))
            return problem and "internal route: send the data dir's worker credential"
        if path in PUBLIC_PATHS:
            return None
        return key_problem(authorization, self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(b"authorization")
            problem = self._problem(scope["path"], raw.decode("latin-1") if raw else None)
            if problem is not None:
                await _send_error(
                    send, 401, "unauthorized", problem, [(b"www-authenticate", b"Bearer")]
                )
                return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """413 once a request body passes its path's limit, whether declared or streamed."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for  # path -> (bytes, the setting that sets it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        message = f"the request body is over the {limit / 1e6:g} MB limit ({setting})"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _send_error(send, 413, "payload_too_large", message, [])
            return
        seen = 0
        exceeded = answered = started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _TooLarge  # stop reading: nothing past the limit is spooled
            return event

        async def guarded_send(event: Message) -> None:
            # Whatever the app makes of the cut-off body (a parser's 400, say), the client
            # is told the real reason.
            nonlocal answered, started
            if exceeded:
                if not answered and not started:
                    answered = True
                    await _send_error(send, 413, "payload_too_large", message, [])
                return
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not answered and not started:
            await _send_error(send, 413, "payload_too_large", message, [])


def limits(max_upload: int, max_body: int) -> Callable[[str], tuple[int, str]]:
    def limit_for(path: str) -> tuple[int, str]:
        if path == "/v1/documents":
            return max_upload, "QUARRY_MAX_UPLOAD_MB"
        return max_body, "QUARRY_MAX_BODY_MB"

    return limit_for
