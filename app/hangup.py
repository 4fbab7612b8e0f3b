"""Work for a client that may hang up: a request abandoned while it waits for the model is
dropped, not run. A client that timed out (and retried elsewhere) must not leave its request
in the queue: abandoned work keeps every later request waiting past its own timeout, and a
loaded server never catches up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request, Response

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's code: the client hung up before the answer
POLL_S = 0.25


async def unless_hung_up(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None once the client has hung up; the work is then cancelled
    (a micro-batch not yet started drops it)."""
    if await request.is_disconnected():
        if asyncio.iscoroutine(work):
            work.close()  # never started: nothing to cancel
        return None
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=POLL_S)
            if not task.done() and await request.is_disconnected():
                return None
        return task.result()
    finally:
        if not task.done():
            task.cancel()


def client_closed() -> Response:
    """The answer nobody reads, for the access log and the metrics."""
    return Response(status_code=CLIENT_CLOSED)
