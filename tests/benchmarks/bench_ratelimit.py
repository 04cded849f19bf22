"""Rate limiter at saturation: Redis calls per granted token, and its overhead per token.

Each process runs `waiters` coroutines that take tokens for one inbox in a loop (like a
consumer whose contacts all wait on one throttled inbox), against the real Redis.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from sender.adapters.redis_rate_backend import RedisBucketStore, limiter_keys
from sender.core.ratelimit import Rate
from sender.core.token_pump import TokenPump
from tests.integration.ratecheck import max_in_window

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class LimiterFigures:
    """What one saturation run measured."""

    processes: int
    rate: float
    burst: int
    tokens: int
    calls: int
    seconds: float
    most_in_a_second: int

    @property
    def calls_per_token(self) -> float:
        return self.calls / self.tokens

    @property
    def achieved_ratio(self) -> float:
        return self.tokens / self.seconds / self.rate


async def _take_tokens(
    inbox: str, rate: Rate, waiters: int, seconds: float
) -> tuple[list[float], int]:
    """When each token was used (CLOCK_MONOTONIC, shared by processes), and Redis calls."""
    client = aioredis.from_url(REDIS_URL)
    limiter = TokenPump(RedisBucketStore(client), lambda _: rate)
    stop_at = time.monotonic() + seconds
    used: list[float] = []

    async def waiter() -> None:
        while time.monotonic() < stop_at:
            reply = await limiter.reserve(inbox)
            await asyncio.sleep(reply.wait_s)
            if (now := time.monotonic()) < stop_at:
                used.append(now)

    await asyncio.gather(*(waiter() for _ in range(waiters)))
    await limiter.close()
    await client.aclose()
    return used, limiter.calls


def _process(
    inbox: str, rate: Rate, waiters: int, seconds: float, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    out.put(asyncio.run(_take_tokens(inbox, rate, waiters, seconds)))


def saturate(
    processes: int, rate: float, burst: int, waiters: int, seconds: float
) -> LimiterFigures:
    """Run `processes` processes of `waiters` token takers on one inbox for `seconds`."""
    inbox = f"bench-{uuid.uuid4().hex[:8]}"
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    workers = [
        multiprocessing.Process(
            target=_process, args=(inbox, Rate(rate, burst), waiters, seconds, out)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=seconds + 30) for _ in workers]
    for worker in workers:
        worker.join(10)
    asyncio.run(_forget(inbox))
    used = [when for times, _ in results for when in times]
    return LimiterFigures(
        processes=processes,
        rate=rate,
        burst=burst,
        tokens=len(used),
        calls=sum(calls for _, calls in results),
        seconds=seconds,
        most_in_a_second=max_in_window(used),
    )


async def _forget(inbox: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    await client.delete(*limiter_keys(inbox))
    await client.aclose()


async def overhead_per_token(tokens: int = 5000) -> float:
    """Seconds one uncontended token costs (rate far above what one caller can take)."""
    client = aioredis.from_url(REDIS_URL)
    limiter = TokenPump(RedisBucketStore(client), lambda _: Rate(1e6, 1000))
    inbox = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    for _ in range(tokens):
        await limiter.reserve(inbox)
    elapsed = time.perf_counter() - started
    await limiter.close()
    await client.delete(*limiter_keys(inbox))
    await client.aclose()
    return elapsed / tokens
