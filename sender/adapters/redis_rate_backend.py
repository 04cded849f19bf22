"""Redis `BucketStore`: every pod's buckets in one place, with Redis `TIME` as the only clock.

The reservation runs as one Lua call (`gcra_batch.lua`, registered once at start), so a
batch is atomic across pods. Keys carry the inbox id as a hash tag (`sender:rl:{inbox-42}`),
so they are Redis-Cluster safe, and expire once idle. Redis that cannot be reached raises
`DependencyUnavailable`, on which the limiter (`sender.core.token_pump`) grants nothing.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sender.core.page import validate_id
from sender.core.ratelimit import BatchReply, batch_args_us
from sender.errors import DependencyUnavailable


def bucket_key(inbox_id: str) -> str:
    """The Redis key of one inbox's bucket (hash-tagged by inbox id)."""
    return f"sender:rl:{{{validate_id('inbox id', inbox_id)}}}"


@cache
def _gcra_batch_lua() -> str:
    return files("sender.adapters").joinpath("gcra_batch.lua").read_text(encoding="utf-8")


class RedisBucketStore:
    """Per-inbox GCRA buckets in Redis, reserved in batches by one Lua script."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._script = client.register_script(_gcra_batch_lua())

    async def reserve_batch(
        self, inbox_id: str, period_s: float, tolerance_s: float, horizon_s: float, wanted: int
    ) -> BatchReply:
        """Reserve up to `wanted` slots usable within `horizon_s` of Redis' now.

        Raises `DependencyUnavailable` when Redis cannot be reached.
        """
        period_us, tolerance_us, horizon_us = batch_args_us(period_s, tolerance_s, horizon_s)
        try:
            granted, first_us, retry_us = await self._script(
                keys=[bucket_key(inbox_id)], args=[period_us, tolerance_us, horizon_us, wanted]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise DependencyUnavailable("redis", str(error) or type(error).__name__) from error
        return BatchReply(int(granted), int(first_us) / 1e6, int(retry_us) / 1e6)
