"""`/readyz` runs its checks at most once a second, shared by every probe meanwhile."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import CollectorRegistry

from sender.runtime.probes import ProbeServer, SharedReadiness


class CountingCheck:
    """A readiness check that takes a moment, as a PostgreSQL query does, and counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.ok = True

    async def __call__(self) -> bool:
        self.runs += 1
        await asyncio.sleep(0.01)
        return self.ok


async def test_200_concurrent_readyz_calls_cause_at_most_two_checks() -> None:
    postgres, redis = CountingCheck(), CountingCheck()
    server = ProbeServer(CollectorRegistry(), {"postgres": postgres, "redis": redis})
    await server.start(0, "127.0.0.1")
    try:
        async with aiohttp.ClientSession() as session:

            async def probe() -> int:
                async with session.get(f"http://127.0.0.1:{server.port}/readyz") as response:
                    return response.status

            statuses = await asyncio.gather(*(probe() for _ in range(200)))
    finally:
        await server.stop()

    assert statuses == [200] * 200
    assert postgres.runs <= 2
    assert redis.runs <= 2


async def test_readiness_is_computed_again_once_the_last_answer_is_a_second_old() -> None:
    now = 100.0
    check = CountingCheck()
    readiness = SharedReadiness({"postgres": check}, monotonic=lambda: now)

    first = await readiness.results()
    check.ok = False
    cached = await readiness.results()
    now += 1.0
    fresh = await readiness.results()

    assert first == cached == {"postgres": True}
    assert fresh == {"postgres": False}
    assert check.runs == 2


async def test_a_probe_that_hangs_up_does_not_cancel_the_shared_run() -> None:
    check = CountingCheck()
    readiness = SharedReadiness({"postgres": check})
    impatient = asyncio.create_task(readiness.results())
    await asyncio.sleep(0)
    impatient.cancel()
    patient = await readiness.results()

    assert patient == {"postgres": True}
    assert check.runs == 1
