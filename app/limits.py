"""Refuses an upload by its declared size before any of its body is read."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_body


class UploadSizeLimit:
    """Pure ASGI middleware: 413 for POSTs to `path` declaring more than `max_bytes`."""

    def __init__(self, app: ASGIApp, path: str, max_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if declared.isdigit() and int(declared) > self.max_bytes:
                message = (
                    f"the upload is {int(declared) / 1e6:.1f} MB, over the "
                    f"{self.max_bytes / 1e6:g} MB limit per request (QUARRY_MAX_UPLOAD_MB)"
                )
                body = json.dumps(error_body("payload_too_large", message)).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
