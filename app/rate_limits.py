"""Per-key rate limits, shared by every API replica through Redis.

Each limit is a GCRA bucket (the generic cell rate algorithm: a token bucket kept as one
timestamp, the "theoretical arrival time"), evaluated in one Lua script on Redis's clock,
so replicas with skewed clocks still share one budget. Requests cost 1 against
`rps` with `burst`; uploads cost their bytes against `upload_mb_per_hour` (an hour's bytes
may come at once, then refill evenly).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from app.keys import Principal

log = logging.getLogger(__name__)

# KEYS[1]: the bucket. ARGV: units per second, burst (units), cost, force (1: charge even
# past the limit: bytes already received). Answer: {allowed, retry after in ms}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local per_unit = 1000 / tonumber(ARGV[1])
local tolerance = per_unit * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * per_unit
local allow_at = new_tat - tolerance
if allow_at > now and ARGV[4] ~= '1' then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    reason: str = ""
    status: int = 429  # 413: the request alone is over the limit (waiting will not help)


ALLOWED = Verdict(True)


class RateLimiter:
    def __init__(self, client: Callable[[], redis.Redis], namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:rate:"
        self._redis: redis.Redis | None = None
        self._script: redis.commands.core.Script | None = None
        self._warned_at = -3600.0

    def _run(self, bucket: str, rate: float, burst: float, cost: float, force: bool) -> int:
        """Milliseconds to wait (0: allowed). Redis unreachable: allowed (logged), so a
        cache outage never takes the API down with it."""
        try:
            if self._script is None:
                self._redis = self._client()
                self._script = self._redis.register_script(_GCRA)
            allowed, wait_ms = self._script(
                keys=[self._prefix + bucket], args=[rate, burst, cost, int(force)]
            )
        except redis.RedisError as exc:
            if time.monotonic() - self._warned_at > 60:  # once a minute, not per request
                self._warned_at = time.monotonic()
                log.warning("rate limits not applied: Redis is unreachable (%s)", exc)
            return 0
        return 0 if allowed else max(1, int(wait_ms))

    def request(self, who: Principal) -> Verdict:
        limits = who.limits
        if not limits.rps:
            return ALLOWED
        wait = self._run(f"{who.id}:req", limits.rps, max(1, limits.burst), 1, False)
        if not wait:
            return ALLOWED
        return Verdict(
            False,
            math.ceil(wait / 1000),
            f"key {who.id} ({who.name}) is over its limit of {limits.rps:g} requests a second "
            f"(burst {limits.burst})",
        )

    def upload(self, who: Principal, size: int, *, force: bool = False) -> Verdict:
        """Charge an upload's bytes (`force`: received already, charged whatever the
        budget: the next upload waits instead)."""
        per_hour = who.limits.upload_mb_per_hour * 1e6
        if not per_hour or size <= 0:
            return ALLOWED
        if size > per_hour and not force:
            return Verdict(
                False,
                0,
                f"this upload ({size / 1e6:.1f} MB) is over key {who.id}'s whole hourly upload "
                f"budget ({who.limits.upload_mb_per_hour:g} MB an hour): send it in parts",
                status=413,
            )
        wait = self._run(f"{who.id}:bytes", per_hour / 3600, per_hour, size, force)
        if not wait:
            return ALLOWED
        return Verdict(
            False,
            math.ceil(wait / 1000),
            f"key {who.id} ({who.name}) is over its upload limit of "
            f"{who.limits.upload_mb_per_hour:g} MB an hour",
        )
