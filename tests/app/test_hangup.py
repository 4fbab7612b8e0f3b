"""A route waiting on the model stops when its client hangs up (app/hangup.py)."""

from __future__ import annotations

import asyncio

from app.hangup import unless_hung_up


def test_a_route_stops_waiting_when_its_client_hangs_up() -> None:
    """A real Starlette request whose server reports the client gone (`http.disconnect`):
    the wait ends at once with no answer and the work is cancelled, or never started when
    the client was gone before it; a client that stays gets the work's result."""
    from starlette.requests import Request

    def request_hanging_up(after_s: float | None) -> Request:
        gone = asyncio.Event()
        if after_s == 0:
            gone.set()
        elif after_s is not None:
            asyncio.get_running_loop().call_later(after_s, gone.set)

        async def receive() -> dict[str, str]:
            await gone.wait()
            return {"type": "http.disconnect"}

        return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)

    async def scenario() -> tuple[object, bool, float, object, bool]:
        cancelled = asyncio.Event()
        ran = asyncio.Event()

        async def never_needed() -> int:
            ran.set()
            return 2

        async def endless() -> int:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1

        async def quick() -> int:
            await asyncio.sleep(0.3)
            return 7

        loop = asyncio.get_running_loop()
        started = loop.time()
        dropped = await unless_hung_up(request_hanging_up(0.3), endless())
        took = loop.time() - started
        await asyncio.sleep(0)  # let the cancellation land
        kept = await unless_hung_up(request_hanging_up(None), quick())
        gone_before = await unless_hung_up(request_hanging_up(0), never_needed())
        await asyncio.sleep(0.05)
        return dropped, cancelled.is_set(), took, kept, gone_before is None and not ran.is_set()

    dropped, cancelled, took, kept, never_started = asyncio.run(scenario())
    assert dropped is None and cancelled
    assert took < 5
    assert kept == 7
    assert never_started  # a client gone before its turn costs the model nothing
