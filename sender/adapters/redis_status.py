"""Campaign status in Redis: a TTL cache over the ledger, and pause/stop notifications.

    pause/stop:  ledger (truth)  ->  SET cache key  ->  PUBLISH sender:campaign-status
    consumers:   SUBSCRIBE  ->  CampaignGate.status_changed()  (sleepers wake at once)
    lookups:     Redis cache  ->  on a miss or while Redis is down, the ledger

Keys are hash-tagged by campaign id (`sender:cs:{spring-sale}`) for Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import cast, get_args

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sender.adapters.redis_pubsub import subscribe_forever
from sender.core.page import validate_id
from sender.core.ports import CampaignStatus

log = logging.getLogger(__name__)

CHANNEL = "sender:campaign-status"
_STATUSES: frozenset[str] = frozenset(get_args(CampaignStatus))

LedgerLookup = Callable[[str], Awaitable[CampaignStatus | None]]
OnChange = Callable[[str, CampaignStatus], None]


def cache_key(campaign_id: str) -> str:
    """The Redis key caching one campaign's status."""
    return f"sender:cs:{{{validate_id('campaign id', campaign_id)}}}"


class StatusCache:
    """Reads statuses through Redis (TTL `STATUS_CACHE_TTL_MS`), falling back to the ledger."""

    def __init__(self, redis: aioredis.Redis, ledger_lookup: LedgerLookup, ttl_ms: int) -> None:
        self._redis = redis
        self._ledger_lookup = ledger_lookup
        self._ttl_ms = max(1, ttl_ms)

    async def get(self, campaign_id: str) -> CampaignStatus | None:
        """The campaign's status (None when the ledger does not know it)."""
        key = cache_key(campaign_id)
        try:
            cached = await self._redis.get(key)
        except RedisError:
            return await self._ledger_lookup(campaign_id)
        text = cached.decode() if isinstance(cached, bytes) else cached
        if text in _STATUSES:
            return cast(CampaignStatus, text)
        status = await self._ledger_lookup(campaign_id)
        if status is not None:
            # NX: a pause announced while we read the ledger must not be overwritten.
            with contextlib.suppress(RedisError):
                await self._redis.set(key, status, px=self._ttl_ms, nx=True)
        return status

    async def announce(self, campaign_id: str, status: CampaignStatus) -> bool:
        """After the ledger changed: refresh the cache and notify every consumer.

        Returns False when Redis could not be told (consumers then notice within the TTL
        and `ABORT_POLL_MS`).
        """
        try:
            await self._redis.set(cache_key(campaign_id), status, px=self._ttl_ms)
            payload = orjson.dumps({"campaign_id": campaign_id, "status": status})
            await self._redis.publish(CHANNEL, payload)
        except RedisError as error:
            log.warning("status notification not sent", extra={"error": str(error)})
            return False
        return True


async def listen(redis: aioredis.Redis, on_change: OnChange, ready: asyncio.Event) -> None:
    """Deliver status notifications to `on_change` forever, resubscribing after errors."""
    await subscribe_forever(redis, CHANNEL, lambda message: _dispatch(message, on_change), ready)


def _dispatch(message: dict[str, object], on_change: OnChange) -> None:
    try:
        data = orjson.loads(cast(bytes, message["data"]))
        campaign_id, status = str(data["campaign_id"]), str(data["status"])
        validate_id("campaign id", campaign_id)
    except Exception:  # a stray message on the channel is ignored
        log.warning("ignored a malformed status notification")
        return
    if status in _STATUSES:
        on_change(campaign_id, cast(CampaignStatus, status))
