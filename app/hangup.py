"""Model work for a client that may hang up: abandoned work is dropped, not run.

A client that timed out (and retried elsewhere) must not leave its request queued: it would
keep every later request waiting past its own timeout, and a loaded server never catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request, Response

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's code: the client hung up before the answer
POLL_S = 0.25


async def unless_hung_up(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None (the work cancelled) once the client has hung up."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            if await request.is_disconnected():
                return task.result() if task.done() else None
            await asyncio.wait({task}, timeout=POLL_S)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: an answer nobody reads is not an error


def client_closed() -> Response:
    """The answer nobody reads, for the access log and the metrics."""
    return Response(status_code=CLIENT_CLOSED)
