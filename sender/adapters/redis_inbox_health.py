"""Inbox health in Redis: breaker state, its rolling window, the probe claim, holds.

    sender:br:{inbox}        hash  phase, until_ms, cooldown_ms, gen (compare-and-set)
    sender:br:{inbox}:win    hash  "<bucket>:a" / "<bucket>:f" attempt and failure counts
    sender:br:{inbox}:probe  string, SET NX PX: the one probe in flight (expires if its pod dies)
    sender:hold:{inbox}      hash  ra_until_ms (Retry-After), operator 0/1, synced
                             (absent: Redis lost it; the operator hold is reloaded from
                             PostgreSQL `inbox_holds`)

Every change is announced on `sender:inbox-health` (payload: the inbox id); consumers
refetch that inbox (`InboxGate.changed`). Keys are hash-tagged by inbox id, so each
script touches one Redis Cluster slot. Every call raises `DependencyUnavailable` when
Redis cannot be reached. The decisions are `sender.core.breaker`'s; these scripts only
store them atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, cast, get_args

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sender.adapters.redis_pubsub import subscribe_forever
from sender.core.breaker import Breaker, BreakerPhase
from sender.core.inbox_gate import InboxHealth, WindowCounts
from sender.core.page import validate_id
from sender.errors import DependencyUnavailable

log = logging.getLogger(__name__)

CHANNEL = "sender:inbox-health"
_PHASES: frozenset[str] = frozenset(get_args(BreakerPhase))
_BUCKETS = 10  # the window is kept in this many buckets (at least 100 ms each)
_STATE_TTL_MS = 7 * 86_400_000  # an idle inbox's closed breaker is forgotten after a week

HeldLookup = Callable[[str], Awaitable[bool]]

_REPORT = """
local bucket_ms, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local b = math.floor(tonumber(ARGV[1]) / bucket_ms)
redis.call('HINCRBY', KEYS[2], b .. ':a', ARGV[4])
redis.call('HINCRBY', KEYS[2], b .. ':f', ARGV[5])
redis.call('PEXPIRE', KEYS[2], bucket_ms * buckets * 2)
local all = redis.call('HGETALL', KEYS[2])
local a, f, oldest = 0, 0, b - buckets + 1
for i = 1, #all, 2 do
  local field = all[i]
  local sep = string.find(field, ':', 1, true)
  if tonumber(string.sub(field, 1, sep - 1)) < oldest then
    redis.call('HDEL', KEYS[2], field)
  elseif string.sub(field, sep + 1) == 'a' then
    a = a + tonumber(all[i + 1])
  else
    f = f + tonumber(all[i + 1])
  end
end
return {a, f, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[3])}
"""

_TRANSITION = """
if tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'phase', ARGV[2], 'until_ms', ARGV[3], 'cooldown_ms', ARGV[4],
  'gen', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[2] ~= 'half_open' then redis.call('DEL', KEYS[3]) end
if ARGV[2] == 'closed' then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"""

_CLAIM = """
if tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') ~= tonumber(ARGV[1]) then return 0 end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'half_open', 'gen', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 0
"""

_HOLD_UNTIL = """
if tonumber(redis.call('HGET', KEYS[1], 'ra_until_ms') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'ra_until_ms', ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 0
"""

# Reload the operator hold unless someone (the CLI) wrote it meanwhile.
_SYNC = """
if redis.call('HSETNX', KEYS[1], 'synced', '1') == 1 then
  redis.call('HSET', KEYS[1], 'operator', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


def breaker_key(inbox_id: str) -> str:
    """The Redis key of one inbox's breaker (hash-tagged by inbox id)."""
    return f"sender:br:{{{validate_id('inbox id', inbox_id)}}}"


def hold_key(inbox_id: str) -> str:
    """The Redis key of one inbox's holds (same hash tag as its breaker)."""
    return f"sender:hold:{{{validate_id('inbox id', inbox_id)}}}"


class RedisInboxHealth:
    """The `InboxHealthStore` of every consumer, and the CLI's view of an inbox."""

    def __init__(self, client: aioredis.Redis, held_in_ledger: HeldLookup) -> None:
        self._redis = client
        self._held_in_ledger = held_in_ledger
        self._report = client.register_script(_REPORT)
        self._transition = client.register_script(_TRANSITION)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._hold_until = client.register_script(_HOLD_UNTIL)
        self._sync = client.register_script(_SYNC)

    async def read(self, inbox_id: str) -> InboxHealth:
        """The inbox's breaker and holds (one round trip, two when the hold is reloaded)."""
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(breaker_key(inbox_id))
                pipe.hgetall(hold_key(inbox_id))
                breaker, hold = await pipe.execute()
        return await self._health(inbox_id, _pairs(breaker), _pairs(hold))

    async def report(
        self, inbox_id: str, attempts: int, failures: int, now: float, window_s: float
    ) -> WindowCounts:
        """Add to the window (buckets of window/10, at least 100 ms); totals and state."""
        bucket_ms = max(100, int(window_s * 1000 / _BUCKETS))
        buckets = max(1, round(window_s * 1000 / bucket_ms))
        key = breaker_key(inbox_id)
        with _unavailable():
            total_a, total_f, breaker, hold = await self._report(
                keys=[key, f"{key}:win", hold_key(inbox_id)],
                args=[int(now * 1000), bucket_ms, buckets, attempts, failures],
            )
        health = await self._health(inbox_id, _flat(breaker), _flat(hold))
        return WindowCounts(int(total_a), int(total_f), health)

    async def transition(self, inbox_id: str, gen: int, after: Breaker) -> bool:
        """Store `after` if the breaker is still at `gen`; announce it."""
        key = breaker_key(inbox_id)
        with _unavailable():
            done = await self._transition(
                keys=[key, f"{key}:win", f"{key}:probe"],
                args=[
                    gen,
                    after.phase,
                    int(after.until * 1000),
                    int(after.cooldown_s * 1000),
                    after.gen,
                    CHANNEL,
                    inbox_id,
                    _STATE_TTL_MS,
                ],
            )
        return bool(done)

    async def claim_probe(
        self, inbox_id: str, gen: int, after: Breaker, claim: str, lease_s: float
    ) -> bool:
        """SET NX the probe key (expiring after `lease_s`) and go half-open, at `gen` only."""
        key = breaker_key(inbox_id)
        with _unavailable():
            won = await self._claim(
                keys=[key, f"{key}:probe"],
                args=[gen, claim, max(1, int(lease_s * 1000)), after.gen, CHANNEL, inbox_id],
            )
        return bool(won)

    async def release_probe(self, inbox_id: str, claim: str) -> None:
        """Drop the probe claim if it is still `claim`."""
        with _unavailable():
            await self._release(
                keys=[f"{breaker_key(inbox_id)}:probe"], args=[claim, CHANNEL, inbox_id]
            )

    async def hold_until(self, inbox_id: str, until: float) -> None:
        """Hold the inbox until `until` unless a later Retry-After hold is already set."""
        with _unavailable():
            await self._hold_until(
                keys=[hold_key(inbox_id)], args=[int(until * 1000), CHANNEL, inbox_id]
            )

    async def set_operator_hold(self, inbox_id: str, held: bool) -> None:
        """After the ledger changed: carry the operator hold to Redis and announce it."""
        with _unavailable():
            await self._redis.hset(hold_key(inbox_id), mapping={"operator": int(held), "synced": 1})
            await self._redis.publish(CHANNEL, inbox_id)

    async def _health(
        self, inbox_id: str, breaker: dict[str, str], hold: dict[str, str]
    ) -> InboxHealth:
        if "synced" not in hold:
            held = await self._held_in_ledger(inbox_id)
            with _unavailable():
                synced = await self._sync(keys=[hold_key(inbox_id)], args=[int(held)])
            hold = _flat(synced)
        return InboxHealth(
            breaker=_breaker(breaker),
            retry_after_until=int(hold.get("ra_until_ms", 0)) / 1000,
            operator_hold=hold.get("operator") == "1",
        )


def _breaker(fields: dict[str, str]) -> Breaker:
    phase = fields.get("phase", "closed")
    return Breaker(
        phase=cast(BreakerPhase, phase if phase in _PHASES else "closed"),
        until=int(fields.get("until_ms", 0)) / 1000,
        cooldown_s=int(fields.get("cooldown_ms", 0)) / 1000,
        gen=int(fields.get("gen", 0)),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(mapping: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in mapping.items()}


def _flat(items: Sequence[Any]) -> dict[str, str]:
    """A Lua HGETALL reply (`[k1, v1, k2, v2, ...]`) as a dict."""
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """Turn Redis connection errors into `DependencyUnavailable`."""
    try:
        yield
    except (RedisError, OSError) as error:
        raise DependencyUnavailable("redis", str(error) or type(error).__name__) from error


OnChange = Callable[[str], None]


async def listen(redis: aioredis.Redis, on_change: OnChange, ready: asyncio.Event) -> None:
    """Deliver inbox-health notifications to `on_change` forever, resubscribing after errors."""
    await subscribe_forever(redis, CHANNEL, lambda message: _dispatch(message, on_change), ready)


def _dispatch(message: dict[str, object], on_change: OnChange) -> None:
    try:
        inbox_id = validate_id("inbox id", _text(message["data"]))
    except Exception:  # a stray message on the channel is ignored
        log.warning("ignored a malformed inbox notification")
        return
    on_change(inbox_id)
