"""Redis `BucketStore`: every pod's buckets in one place, with Redis `TIME` as the only clock.

The reservation runs as one Lua call (`gcra_batch.lua`, registered once at start), so a
batch and its fair split between campaigns are atomic across pods. Both keys carry the
inbox id as a hash tag (`sender:rl:{inbox-42}`, `sender:share:{inbox-42}`), so they are
Redis-Cluster safe, and expire once idle. Redis that cannot be reached raises
`DependencyUnavailable`, on which the limiter (`sender.core.token_pump`) grants nothing.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sender.core.fair_share import ACTIVE_S, FAIR_RETRY_S, FORGET_S
from sender.core.page import validate_id
from sender.core.ratelimit import BatchAsk, BatchReply, batch_args_us, whole_us
from sender.errors import DependencyUnavailable


def bucket_key(inbox_id: str) -> str:
    """The Redis key of one inbox's bucket (hash-tagged by inbox id)."""
    return f"sender:rl:{{{validate_id('inbox id', inbox_id)}}}"


def share_key(inbox_id: str) -> str:
    """The Redis key of one inbox's campaign standings (`fair_share.Standing`), same slot."""
    return f"sender:share:{{{validate_id('inbox id', inbox_id)}}}"


def limiter_keys(inbox_id: str) -> tuple[str, str]:
    """Every key the limiter keeps for one inbox (to delete them all)."""
    return bucket_key(inbox_id), share_key(inbox_id)


@cache
def _gcra_batch_lua() -> str:
    return files("sender.adapters").joinpath("gcra_batch.lua").read_text(encoding="utf-8")


class RedisBucketStore:
    """Per-inbox GCRA buckets in Redis, reserved in batches by one Lua script."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._script = client.register_script(_gcra_batch_lua())

    async def reserve_batch(self, inbox_id: str, ask: BatchAsk) -> BatchReply:
        """Reserve what `ask` wants of slots usable within its horizon of Redis' now.

        Raises `DependencyUnavailable` when Redis cannot be reached.
        """
        args: list[int | str] = [*batch_args_us(ask.period_s, ask.tolerance_s, ask.horizon_s)]
        args.append(ask.quantum)
        args += [whole_us(ACTIVE_S), whole_us(FORGET_S), whole_us(FAIR_RETRY_S)]
        for campaign_id, wanted in ask.wants:
            args += [campaign_id, wanted]
        try:
            first_us, retry_us, *granted = await self._script(
                keys=[bucket_key(inbox_id), share_key(inbox_id)], args=args
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise DependencyUnavailable("redis", str(error) or type(error).__name__) from error
        return BatchReply(tuple(map(int, granted)), int(first_us) / 1e6, int(retry_us) / 1e6)
