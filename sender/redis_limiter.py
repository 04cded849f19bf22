"""Redis GCRA limiter shared by every pod: one Lua call per token, Redis `TIME` as the clock.

The script reserves the caller's slot and returns how long to wait for it, so waiters
sleep until their slot instead of polling. Keys carry the inbox id as a hash tag
(`sender:rl:{inbox-42}`), so they are Redis-Cluster safe, and expire once idle.
If Redis cannot be reached no token is granted (fail closed): the caller retries until
`max_wait_s` and then releases the contact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sender.page import validate_id
from sender.ratelimit import Rate

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV period_us, burst, max_wait_us. Returns wait_us, or -1 if too long.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + period
local wait = new_tat - burst * period - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return -1 end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return wait
"""

RateLookup = Callable[[str], Rate]
_UNAVAILABLE_RETRY_S = (0.1, 1.0)


def bucket_key(inbox_id: str) -> str:
    """The Redis key of one inbox's bucket (hash-tagged by inbox id)."""
    return f"sender:rl:{{{validate_id('inbox id', inbox_id)}}}"


class RedisRateLimiter:
    """Per-inbox GCRA in Redis: N processes together never exceed an inbox's rate."""

    def __init__(
        self,
        client: aioredis.Redis,
        rates: RateLookup,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._script = client.register_script(_GCRA_LUA)
        self._rates = rates
        self._monotonic = monotonic
        self._sleep = sleep
        self.calls = 0

    async def acquire(self, inbox_id: str, max_wait_s: float) -> float | None:
        """Reserve a token and sleep until its slot; None if none within `max_wait_s`."""
        started = self._monotonic()
        key = bucket_key(inbox_id)
        backoff = _UNAVAILABLE_RETRY_S[0]
        while True:
            left_s = max_wait_s - (self._monotonic() - started)
            try:
                wait_s = await self._reserve(key, self._rates(inbox_id), left_s)
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                if left_s <= backoff:
                    return None
                log.warning("rate limiter: redis unavailable", extra={"error": str(error)})
                await self._sleep(backoff)
                backoff = min(backoff * 2, _UNAVAILABLE_RETRY_S[1])
                continue
            if wait_s is None:
                return None
            if wait_s > 0:
                await self._sleep(wait_s)
            return self._monotonic() - started

    async def _reserve(self, key: str, rate: Rate, max_wait_s: float) -> float | None:
        self.calls += 1
        period_us = max(1, round(rate.period_s * 1_000_000))
        max_wait_us = max(0, int(max_wait_s * 1_000_000))
        wait_us = int(await self._script(keys=[key], args=[period_us, rate.burst, max_wait_us]))
        return None if wait_us < 0 else wait_us / 1_000_000
