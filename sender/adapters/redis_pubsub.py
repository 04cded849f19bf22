"""One Redis pub/sub channel delivered to a callback forever, resubscribing after errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

OnMessage = Callable[[dict[str, object]], None]
RESUBSCRIBE_AFTER_S = 1.0


async def subscribe_forever(
    redis: aioredis.Redis, channel: str, on_message: OnMessage, ready: asyncio.Event
) -> None:
    """Hand every message of `channel` to `on_message`; `ready` is set while subscribed.

    redis-py's read can swallow a cancellation that lands at the wrong moment; a stop
    asked for meanwhile is honoured when the read then fails (its client closed).
    """
    while True:
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                ready.set()
                async for message in pubsub.listen():
                    on_message(message)
        except (RedisError, OSError) as error:
            if _stop_requested():
                raise asyncio.CancelledError from error  # the read ate the cancellation
            ready.clear()
            log.warning(
                "notifications lost; resubscribing",
                extra={"channel": channel, "error": str(error)},
            )
            await asyncio.sleep(RESUBSCRIBE_AFTER_S)


def _stop_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
