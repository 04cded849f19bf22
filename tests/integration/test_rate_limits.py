"""DESIGN §4 rate limits: one Redis bucket per inbox, exact across consumer processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from sender.core.token_pump import RESERVATION_HORIZON_S
from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.integration.conftest import Names
from tests.integration.private_services import PrivateRedis
from tests.integration.ratecheck import max_in_window, steady_rate
from tests.integration.support import (
    contact_rows,
    make_page,
    publish,
    run_cli,
    running_consumer,
    settings_env,
    start_consumer_process,
    wait_for_final,
)

MakeSettings = Callable[..., Settings]


async def _publish_pages(channel, names: Names, inbox: str, pages: int, size: int) -> None:
    for number in range(pages):
        page = make_page(names.campaign, size, page=number, inbox_id=inbox, prefix=f"p{number}")
        await publish(channel, names.queue, orjson.dumps(page))


def _arrivals(inbox: FakeInbox, inbox_id: str) -> list[float]:
    return [r.received_at for r in inbox.requests if r.inbox_id == inbox_id]


@pytest.mark.parametrize("processes", [2, 4])
async def test_consumer_processes_together_keep_one_inbox_within_rate_plus_burst(
    processes: int,
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_id: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    rate, burst, contacts = 50, 10, 600
    settings = make_settings(
        inbox_rate_per_sec=rate, inbox_burst=burst, dispatch_concurrency=50, prefetch_pages=2
    )
    consumers = [
        await start_consumer_process(settings, str(tmp_path / f"consumer{i}.log"))
        for i in range(processes)
    ]
    try:
        await _publish_pages(channel, names, inbox_id, pages=6, size=contacts // 6)
        rows = await wait_for_final(pool, names.campaign, contacts, timeout=60)
    finally:
        for consumer in consumers:
            consumer.stop()

    times = _arrivals(inbox, inbox_id)
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(times) == contacts
    assert max(times) - min(times) >= 10
    assert max_in_window(times) <= rate + burst
    assert steady_rate(times, burst) >= 0.95 * rate


async def test_a_throttled_inbox_does_not_slow_a_fast_one_on_the_same_consumer(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_id: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    slow_inbox = f"{inbox_id}-slow"
    settings = make_settings(dispatch_concurrency=50, inbox_rate_per_sec=200, inbox_burst=10)
    await run_async_cli(
        "inbox", "set-rate", slow_inbox, "--rate", "2", "--burst", "1", settings=settings
    )
    # A separate process, so the fake inbox's clock is not disturbed by the consumer's work.
    consumer = await start_consumer_process(settings, str(tmp_path / "consumer.log"))
    try:
        slow = make_page(names.campaign, 200, inbox_id=slow_inbox, prefix="slow")
        await publish(channel, names.queue, orjson.dumps(slow))
        await inbox.wait_for_requests(1)
        fast = make_page(names.campaign, 600, inbox_id=inbox_id, prefix="fast")
        await publish(channel, names.queue, orjson.dumps(fast))
        await inbox.wait_for_requests(600 + 1, timeout=30)
        while len(_arrivals(inbox, inbox_id)) < 600:
            await inbox.wait_for_requests(inbox.received + 1, timeout=30)
    finally:
        consumer.stop()
        await pool.execute("DELETE FROM inbox_rates WHERE inbox_id = $1", slow_inbox)

    fast_times = _arrivals(inbox, inbox_id)
    slow_times = _arrivals(inbox, slow_inbox)
    assert steady_rate(fast_times, 10) >= 0.95 * 200
    assert max_in_window(fast_times) <= 200 + 10
    assert max_in_window(slow_times) <= 2 + 1
    assert len(slow_times) < 20  # still throttled while the fast inbox went through


async def run_async_cli(*args: str, settings: Settings) -> None:
    """Run a CLI command off the event loop and require success."""
    result = await asyncio.to_thread(run_cli, *args, env=settings_env(settings))
    assert result.returncode == 0, result.stderr


async def test_set_rate_on_a_running_consumer_changes_the_observed_rate_within_a_second(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_id: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    # Burst 10 at the new rate leaves room for the limiter's send-jitter allowance (90 ms
    # at 100/s): with burst 1 there is none, and one event-loop stall shows as overshoot.
    new_rate, new_burst = 100, 10
    settings = make_settings(dispatch_concurrency=20, inbox_rate_per_sec=10, inbox_burst=1)
    # A separate process, so the fake inbox's clock is not disturbed by the consumer's work.
    consumer = await start_consumer_process(settings, str(tmp_path / "consumer.log"))
    try:
        page = make_page(names.campaign, 1000, inbox_id=inbox_id)
        await publish(channel, names.queue, orjson.dumps(page))
        await inbox.wait_for_requests(20)
        await run_async_cli(
            "inbox",
            "set-rate",
            inbox_id,
            "--rate",
            str(new_rate),
            "--burst",
            str(new_burst),
            settings=settings,
        )
        changed_at = time.monotonic()
        await inbox.wait_for_requests(20 + 250, timeout=10)
    finally:
        consumer.stop()

    times = _arrivals(inbox, inbox_id)
    before = [t for t in times if t < changed_at]
    after = [t for t in times if changed_at + 1.0 <= t < changed_at + 2.0]
    assert steady_rate(before, 1) <= 10 * 1.1
    assert len(after) >= 0.9 * new_rate
    assert max_in_window([t for t in times if t >= changed_at]) <= new_rate + new_burst
    overrides = run_cli("inbox", "show", "--json", env=settings_env(settings))
    expected = {"inbox_id": inbox_id, "rate_per_sec": float(new_rate), "burst": new_burst}
    assert expected in orjson.loads(overrides.stdout)
    await pool.execute("DELETE FROM inbox_rates WHERE inbox_id = $1", inbox_id)


async def test_every_attempt_of_a_retried_contact_takes_a_token(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_id: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
) -> None:
    inbox.script("c-0000", Step(503), Step(503), Step(503), Step(200))
    settings = make_settings(inbox_rate_per_sec=4, inbox_burst=1, dispatch_backoff_base_ms=10)
    async with running_consumer(settings) as app:
        page = make_page(names.campaign, 1, inbox_id=inbox_id)
        await publish(channel, names.queue, orjson.dumps(page))
        await app.wait_settled(1)
        tokens = app.metrics.value("sender_rate_limit_wait_seconds_count")
        retries = sum(
            app.metrics.value("sender_dispatch_retries_total", attempt=str(n)) for n in (1, 2, 3)
        )

    times = _arrivals(inbox, inbox_id)
    assert tokens == 4
    assert retries == 3
    assert len(times) == 4
    # Backoff is 10-40 ms; the 4/s bucket spaces the attempts by its 250 ms period.
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.25 - 0.02
    rows = await contact_rows(pool, names.campaign)
    assert rows["c-0000"]["status"] == "sent"


async def test_redis_outage_sends_nothing_without_a_token_and_the_run_completes(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_id: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    private_redis: PrivateRedis,
) -> None:
    rate, burst = 50, 5
    settings = make_settings(
        redis_url=private_redis.url,
        inbox_rate_per_sec=rate,
        inbox_burst=burst,
        dispatch_concurrency=20,
    )
    async with running_consumer(settings) as app:
        await publish(
            channel, names.queue, orjson.dumps(make_page(names.campaign, 300, inbox_id=inbox_id))
        )
        await inbox.wait_for_requests(50)
        private_redis.stop()  # SIGKILL
        down_at = time.monotonic()
        await asyncio.sleep(3)  # the outage itself: nothing to await but time
        # Slots reserved before the outage (at most the horizon ahead) may still be used.
        granted_before = down_at + RESERVATION_HORIZON_S + 0.2
        sent_while_down = [t for t in _arrivals(inbox, inbox_id) if t > granted_before]
        assert app.probes is not None
        async with httpx.AsyncClient() as client:
            readiness = await client.get(f"http://127.0.0.1:{app.probes.port}/readyz")
        private_redis.start()
        await app.wait_settled(1)

    rows = await contact_rows(pool, names.campaign)
    times = _arrivals(inbox, inbox_id)
    assert sent_while_down == []
    assert readiness.status_code == 503
    assert readiness.json()["checks"]["redis"] is False
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(set(inbox.keys())) == 300
    assert max_in_window(times) <= rate + burst


async def test_contacts_without_a_token_in_time_go_out_again_in_a_continuation_page(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_id: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
) -> None:
    rate, burst = 5, 1
    settings = make_settings(
        inbox_rate_per_sec=rate,
        inbox_burst=burst,
        rate_limit_max_wait_ms=300,
        dispatch_timeout_ms=300,
    )
    async with running_consumer(settings) as app:
        page = make_page(names.campaign, 12, inbox_id=inbox_id)
        await publish(channel, names.queue, orjson.dumps(page))
        rows = await wait_for_final(pool, names.campaign, 12, timeout=30)
        requeued = app.metrics.value("sender_pages_total", outcome="requeued")
        retries = app.metrics.value("sender_dispatch_retries_total", attempt="1")

    assert {row["status"] for row in rows.values()} == {"sent"}
    assert {row["attempts"] for row in rows.values()} == {1}
    assert requeued >= 1
    assert retries == 0
    assert max_in_window(_arrivals(inbox, inbox_id)) <= rate + burst
    assert set(inbox.keys().values()) == {1}
