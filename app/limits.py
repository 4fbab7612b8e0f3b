"""Body size limits, before a request body is read (pure ASGI middleware).

A body is counted as it arrives (declared length or chunked), so no more than the limit is
ever spooled to memory or disk: past it the answer is 413. (The key, its scope and its rate
limits are checked before this, by `app.guard`.)
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body


async def send_error(
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
            await send_error(send, 413, "payload_too_large", message, [])
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
                    await send_error(send, 413, "payload_too_large", message, [])
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
            await send_error(send, 413, "payload_too_large", message, [])


def limits(max_upload: int, max_body: int) -> Callable[[str], tuple[int, str]]:
    def limit_for(path: str) -> tuple[int, str]:
        if path == "/v1/documents":
            return max_upload, "QUARRY_MAX_UPLOAD_MB"
        return max_body, "QUARRY_MAX_BODY_MB"

    return limit_for
