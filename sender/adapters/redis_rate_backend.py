"""Redis GCRA limiter shared by every pod, with Redis `TIME` as the only clock.

Per process and inbox, one *pump* talks to Redis for all local waiters: one Lua call
reserves as many slots as there are waiters (within a short horizon), and each waiter
learns its slot and sleeps until then, so nobody polls and a busy process makes far
fewer than one call per token. Slots are reserved at most `RESERVATION_HORIZON_S`
ahead, so a `sender inbox set-rate` (raised or lowered) shows at the inbox within a
second. When no slot fits, the pump sleeps until half the horizon is free again.

Keys carry the inbox id as a hash tag (`sender:rl:{inbox-42}`), so they are
Redis-Cluster safe, and expire once idle. If Redis cannot be reached no token is
granted (fail closed): waiters wait until `RATE_LIMIT_MAX_WAIT_MS` and are released.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sender.core.page import validate_id
from sender.core.ports import Spawn, TokenReply, spawn_unsupervised
from sender.core.ratelimit import Rate, tolerance_s

log = logging.getLogger(__name__)

# KEYS[1] bucket. ARGV: period_us, tolerance_us (ratelimit.tolerance_s), horizon_us, wanted.
# Reserves up to `wanted` consecutive slots whose wait is within the horizon.
# Returns {granted, first_tat - now (µs), µs until half the horizon is free (when short)}.
_GCRA_BATCH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local first = tat
local granted = 0
while granted < wanted and (tat + period - tolerance - now) <= horizon do
  tat = tat + period
  granted = granted + 1
end
if granted > 0 then
  local ttl_ms = math.ceil((tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', ttl_ms)
end
local retry = 0
if granted < wanted then
  retry = tat + period - tolerance - now - horizon / 2
  if retry < 0 then retry = 0 end
end
return {granted, first - now, retry}
"""

RateLookup = Callable[[str], Rate]
# Spread between grant and arrival at the inbox that the bucket absorbs (ratelimit.tolerance_s).
SEND_JITTER_ALLOWANCE_S = 0.1
# How far ahead slots are reserved; bounds how long a rate change takes to show.
RESERVATION_HORIZON_S = 0.5
# While Redis is unreachable the pump asks again this often (and grants nothing).
_UNAVAILABLE_RETRY_S = 0.25


def bucket_key(inbox_id: str) -> str:
    """The Redis key of one inbox's bucket (hash-tagged by inbox id)."""
    return f"sender:rl:{{{validate_id('inbox id', inbox_id)}}}"


@dataclass(frozen=True, slots=True)
class _Batch:
    """Waits (from now) of the slots one call reserved, and when to ask again if short."""

    waits: list[float]
    retry_s: float


class RedisRateLimiter:
    """Per-inbox GCRA in Redis: N processes together never exceed an inbox's rate."""

    def __init__(
        self,
        client: aioredis.Redis,
        rates: RateLookup,
        *,
        jitter_allowance_s: float = SEND_JITTER_ALLOWANCE_S,
        horizon_s: float = RESERVATION_HORIZON_S,
        spawn: Spawn = spawn_unsupervised,
    ) -> None:
        self._script = client.register_script(_GCRA_BATCH_LUA)
        self._spawn = spawn
        self._rates = rates
        self._jitter_allowance_s = jitter_allowance_s
        self._horizon_s = horizon_s
        self._waiters: dict[str, deque[asyncio.Future[TokenReply]]] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self.calls = 0

    def reserve(self, inbox_id: str, max_wait_s: float) -> asyncio.Future[TokenReply]:
        """Queue for a slot; the reply's `wait_s` is how long from its arrival until it is yours.

        The future is answered only with a slot, never refused: the caller bounds the wait
        (`max_wait_s`, as `ContactSender` does) and cancels the future to leave the queue.
        A plain future, not a task, because every attempt of every contact asks.
        """
        slot: asyncio.Future[TokenReply] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(inbox_id, deque()).append(slot)
        pump = self._pumps.get(inbox_id)
        if pump is None or pump.done():  # done: gave up, its callback has not run yet
            self._start_pump(inbox_id)
        return slot

    async def close(self) -> None:
        """Stop the pumps (waiters still queued get no token)."""
        pumps = list(self._pumps.values())
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    def _start_pump(self, inbox_id: str) -> None:
        """One supervised pump per inbox: a crash (say `round(nan)` from a bad rate) restarts
        it with backoff and the queued waiters are served by the next run; if it gives up, the
        next `reserve` starts a fresh one."""
        task = self._spawn(f"rate-pump:{inbox_id}", lambda: self._pump(inbox_id))
        self._pumps[inbox_id] = task
        task.add_done_callback(lambda done: self._forget_pump(inbox_id, done))

    def _forget_pump(self, inbox_id: str, task: asyncio.Task[None]) -> None:
        if self._pumps.get(inbox_id) is task:
            del self._pumps[inbox_id]

    async def _pump(self, inbox_id: str) -> None:
        queue = self._waiters[inbox_id]
        while True:
            waiting = sum(1 for waiter in queue if not waiter.done())  # some gave up
            if not waiting:
                queue.clear()
                # At once, not in a done callback: a `reserve` before that would find a
                # pump about to end and queue behind it for nothing.
                self._pumps.pop(inbox_id, None)
                return
            batch = await self._reserve_batch(inbox_id, waiting)
            self._hand_out(queue, batch)
            if batch.retry_s > 0:
                await asyncio.sleep(batch.retry_s)

    @staticmethod
    def _hand_out(queue: deque[asyncio.Future[TokenReply]], batch: _Batch) -> None:
        """Each slot to the longest waiter still there; a slot nobody is left for goes unused."""
        for wait_s in batch.waits:
            while queue and queue[0].done():  # gave up (timeout, halt) while we asked
                queue.popleft()
            if not queue:
                return
            queue.popleft().set_result(TokenReply(reserved=True, wait_s=wait_s))

    async def _reserve_batch(self, inbox_id: str, wanted: int) -> _Batch:
        rate = self._rates(inbox_id)
        tolerance = tolerance_s(rate, self._jitter_allowance_s)
        self.calls += 1
        try:
            granted, first_us, retry_us = await self._script(
                keys=[bucket_key(inbox_id)],
                args=[
                    max(1, round(rate.period_s * 1e6)),
                    round(tolerance * 1e6),
                    round(self._horizon_s * 1e6),
                    wanted,
                ],
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            log.warning("rate limiter: redis unavailable, no token", extra={"error": str(error)})
            return _Batch([], _UNAVAILABLE_RETRY_S)
        # Slot i may be used at first_tat + (i+1)·T - tolerance.
        ahead_s = int(first_us) / 1e6 - tolerance
        waits = [max(0.0, ahead_s + (i + 1) * rate.period_s) for i in range(int(granted))]
        retry_s = max(int(retry_us) / 1e6, 0.001) if int(granted) < wanted else 0.0
        return _Batch(waits, retry_s)
