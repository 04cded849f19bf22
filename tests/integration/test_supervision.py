"""Supervised background tasks against the real services: a crash is restarted, not fatal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis

from sender.adapters.redis_rate_backend import RedisBucketStore, limiter_keys
from sender.core.ratelimit import Rate
from sender.core.token_pump import TokenPump
from sender.runtime.supervisor import RestartPolicy, Supervisor
from sender.settings import Settings
from tests.integration.conftest import Names
from tests.integration.support import REDIS_URL, running_consumer

FAST_RESTARTS = RestartPolicy(base_s=0.01, cap_s=0.05, max_restarts=3, window_s=60)


@pytest.fixture
async def redis_client(names: Names) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.delete(*limiter_keys(f"sv-{names.token}"))
    await client.aclose()


async def test_a_killed_limiter_pump_restarts_and_the_inbox_gets_tokens_again(
    names: Names, redis_client: aioredis.Redis
) -> None:
    inbox_id = f"sv-{names.token}"
    lookups = 0

    def rates(_: str) -> Rate:
        nonlocal lookups
        lookups += 1
        # A NaN rate reaching the pump: `Rate` refuses it, raising inside it (a bad override).
        return Rate(per_sec=float("nan"), burst=5) if lookups == 1 else Rate(per_sec=50, burst=5)

    supervisor = Supervisor(FAST_RESTARTS)
    limiter = TokenPump(RedisBucketStore(redis_client), rates, spawn=supervisor.spawn)
    try:
        waiters = [limiter.reserve(inbox_id) for _ in range(5)]
        async with asyncio.timeout(5):
            replies = await asyncio.gather(*waiters)
        later = limiter.reserve(inbox_id)  # and the inbox keeps getting tokens
        async with asyncio.timeout(5):
            last = await later
    finally:
        await limiter.close()

    assert len(replies) == 5  # every queued waiter got a slot
    assert last.wait_s >= 0
    assert supervisor.restarts == 1
    assert supervisor.healthy


async def test_a_pump_that_gave_up_is_started_afresh_by_the_next_reserve(
    names: Names, redis_client: aioredis.Redis
) -> None:
    inbox_id = f"sv-{names.token}"
    broken = True

    def rates(_: str) -> Rate:
        return Rate(per_sec=float("nan") if broken else 50.0, burst=5)

    supervisor = Supervisor(FAST_RESTARTS)
    limiter = TokenPump(RedisBucketStore(redis_client), rates, spawn=supervisor.spawn)
    try:
        first = limiter.reserve(inbox_id)
        async with asyncio.timeout(5):
            await supervisor.failed.wait()  # crashed past the limit: the process would exit
        broken = False
        async with asyncio.timeout(5):
            reply = await limiter.reserve(inbox_id)
            earlier = await first
    finally:
        await limiter.close()

    assert reply.wait_s >= 0
    assert earlier.wait_s >= 0


@pytest.mark.usefixtures("channel")  # removes the queues the consumer declares
async def test_a_background_task_that_gave_up_makes_the_consumer_unready(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_consumer(make_settings(metrics_host="127.0.0.1")) as app:
        assert app.probes is not None
        url = f"http://127.0.0.1:{app.probes.port}/readyz"
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200
            crashes = 0

            async def always_crashes() -> None:
                nonlocal crashes
                crashes += 1
                raise RuntimeError("a bug")

            app.supervisor._policy = FAST_RESTARTS  # no 15 s of real backoff in a test
            app.supervisor.spawn("doomed", always_crashes)
            async with asyncio.timeout(5):
                await app.supervisor.failed.wait()
                # The answer is cached for up to a second: nothing to await but the probe.
                while (answer := await client.get(url)).status_code == 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)

    assert answer.status_code == 503
    assert answer.json()["checks"]["background"] is False
    assert crashes == FAST_RESTARTS.max_restarts + 1
