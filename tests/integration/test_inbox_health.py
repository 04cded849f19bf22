"""DESIGN.md §11 over consumer processes: the breaker, Retry-After holds, `inbox pause`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from sender.adapters.redis_inbox_health import CHANNEL, breaker_key, hold_key
from sender.adapters.redis_rate_backend import limiter_keys
from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.integration.conftest import Names
from tests.integration.support import (
    REDIS_URL,
    ConsumerProcess,
    make_page,
    publish,
    run_cli,
    settings_env,
    start_consumer_process,
    wait_for_final,
)

MakeSettings = Callable[..., Settings]


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def inbox_ids(
    names: Names, redis: aioredis.Redis, pool: asyncpg.Pool
) -> AsyncIterator[list[str]]:
    """Two fresh inbox ids whose Redis keys and holds are removed afterwards."""
    ids = [f"ih-{names.token}-a", f"ih-{names.token}-b"]
    yield ids
    for inbox_id in ids:
        br = breaker_key(inbox_id)
        keys = (br, f"{br}:win", f"{br}:probe", hold_key(inbox_id), *limiter_keys(inbox_id))
        await redis.delete(*keys)
        await pool.execute("DELETE FROM inbox_holds WHERE inbox_id = $1", inbox_id)
        await pool.execute("DELETE FROM inbox_rates WHERE inbox_id = $1", inbox_id)


async def _publish_pages(
    channel,
    names: Names,
    inbox_id: str,
    pages: int,
    size: int,
    tag: str = "p",
    campaign_id: str | None = None,
) -> None:
    for number in range(pages):
        page = make_page(
            campaign_id or names.campaign,
            size,
            page=number,
            inbox_id=inbox_id,
            prefix=f"{tag}{number}",
        )
        await publish(channel, names.queue, orjson.dumps(page))


async def _consumers(settings: Settings, tmp_path: Path, count: int) -> list[ConsumerProcess]:
    return [
        await start_consumer_process(settings, str(tmp_path / f"consumer{i}.log"))
        for i in range(count)
    ]


async def _metric(consumer: ConsumerProcess, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{consumer.metrics_port}/metrics")).text
    wanted = ",".join(f'{k}="{v}"' for k, v in {"mode": "consumer", **labels}.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _first_open(redis: aioredis.Redis, inbox_id: str, opened: asyncio.Future[float]) -> None:
    """Resolve `opened` with the monotonic time its breaker was announced open."""
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(CHANNEL)
        async for message in pubsub.listen():
            if message["data"] != inbox_id.encode():
                continue
            if await redis.hget(breaker_key(inbox_id), "phase") == b"open":
                opened.set_result(time.monotonic())
                return


def _times(inbox: FakeInbox, inbox_id: str) -> list[float]:
    return [r.received_at for r in inbox.requests if r.inbox_id == inbox_id]


async def test_a_15_s_outage_on_a_shared_inbox_fails_no_contact_and_costs_only_probes(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_ids: list[str],
    channel,
    pool: asyncpg.Pool,
    names: Names,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    inbox_id, contacts, outage_s, cooldown_s = inbox_ids[0], 6000, 15.0, 1.0
    # Without the breaker a contact fails 3.5 s into the outage (0.5 + 1 + 2 s of backoff).
    settings = make_settings(
        inbox_rate_per_sec=300,
        inbox_burst=20,
        dispatch_retry_count=3,
        dispatch_backoff_base_ms=500,
        dispatch_backoff_cap_ms=2000,
        dispatch_concurrency=200,
        prefetch_pages=2,
        breaker_window_s=2,
        breaker_min_attempts=20,
        breaker_cooldown_s=cooldown_s,
        breaker_cooldown_max_s=cooldown_s,
    )
    consumers = await _consumers(settings, tmp_path, 2)
    opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    try:
        await _publish_pages(channel, names, inbox_id, pages=6, size=contacts // 6)
        await inbox.wait_for_requests(1500, timeout=30)
        watcher = asyncio.create_task(_first_open(redis, inbox_id, opened))
        inbox.set_inbox_default(inbox_id, Step(503))
        await asyncio.sleep(outage_s)  # the outage itself: a span of time, nothing to await
        ended = time.monotonic()
        inbox.set_inbox_default(inbox_id, Step(200))
        rows = await wait_for_final(pool, names.campaign, contacts, timeout=90)
        recovered = time.monotonic() - ended
        transitions = [
            {
                to: await _metric(c, "sender_breaker_transitions_total", to=to)
                for to in ("open", "closed")
            }
            for c in consumers
        ]
        still_open = [await _metric(c, "sender_breakers_open") for c in consumers]
    finally:
        for consumer in consumers:
            consumer.stop()
    watcher.cancel()

    statuses = [row["status"] for row in rows.values()]
    assert statuses.count("failed") == 0
    assert statuses.count("sent") == contacts
    opened_at = opened.result()
    during = [t for t in _times(inbox, inbox_id) if opened_at < t < ended]
    print(f"outage POSTs after open: {len(during)}; all sent {recovered:.1f} s after recovery")
    assert len(during) <= outage_s / cooldown_s + 2
    for seen in transitions:
        assert seen["closed"] == 1
        assert seen["open"] >= 1
    assert still_open == [0.0, 0.0]


async def test_retry_after_on_one_contact_holds_the_inbox_on_both_consumers(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_ids: list[str],
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    inbox_id, contacts = inbox_ids[0], 1200
    settings = make_settings(
        inbox_rate_per_sec=200, inbox_burst=20, dispatch_concurrency=50, prefetch_pages=2
    )
    consumers = await _consumers(settings, tmp_path, 2)
    try:
        await _publish_pages(channel, names, inbox_id, pages=4, size=contacts // 4)
        await inbox.wait_for_requests(200, timeout=30)
        inbox.script_inbox(inbox_id, Step(429, retry_after="2"))
        rows = await wait_for_final(pool, names.campaign, contacts, timeout=60)
    finally:
        for consumer in consumers:
            consumer.stop()

    assert {row["status"] for row in rows.values()} == {"sent"}
    told = next(r.received_at for r in inbox.requests if r.step.status == 429)
    # Attempts already on the wire when the hold was announced may land just after it.
    held = [round(t - told, 3) for t in _times(inbox, inbox_id) if told + 0.1 < t < told + 1.95]
    assert held == []
    assert any(told + 1.95 <= t < told + 2.5 for t in _times(inbox, inbox_id))


async def test_inbox_pause_stops_both_consumers_within_250_ms_and_resume_finishes_it(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    inbox_ids: list[str],
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    paused_id, other_id, contacts = inbox_ids[0], inbox_ids[1], 1200
    # A campaign per inbox: a campaign is registered with the inbox of its first page stored.
    other_campaign = f"{names.campaign}-other"
    settings = make_settings(
        inbox_rate_per_sec=150, inbox_burst=20, dispatch_concurrency=50, prefetch_pages=4
    )
    env = settings_env(settings)
    consumers = await _consumers(settings, tmp_path, 2)
    try:
        await _publish_pages(channel, names, paused_id, pages=2, size=contacts // 2, tag="a")
        await _publish_pages(
            channel, names, other_id, pages=2, size=contacts // 2, campaign_id=other_campaign
        )
        await inbox.wait_for_requests(300, timeout=30)
        paused = await asyncio.to_thread(run_cli, "inbox", "pause", paused_id, env=env)
        assert paused.returncode == 0, paused.stderr
        paused_at = time.monotonic()
        status = await asyncio.to_thread(run_cli, "inbox", "status", paused_id, "--json", env=env)
        await asyncio.sleep(2.0)  # a span of paused time to look at
        resumed_at = time.monotonic()
        resumed = await asyncio.to_thread(run_cli, "inbox", "resume", paused_id, env=env)
        assert resumed.returncode == 0, resumed.stderr
        rows = await wait_for_final(pool, names.campaign, contacts, timeout=60)
        rows |= await wait_for_final(pool, other_campaign, contacts, timeout=60)
    finally:
        for consumer in consumers:
            consumer.stop()

    shown = orjson.loads(status.stdout)
    assert shown["hold"]["operator"] is True
    assert shown["breaker"]["state"] == "closed"
    assert [c["campaign_id"] for c in shown["campaigns_waiting"]] == [names.campaign]
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert [t for t in _times(inbox, paused_id) if paused_at + 0.25 < t < resumed_at] == []
    assert [t for t in _times(inbox, other_id) if paused_at + 0.25 < t < resumed_at]
    pending_attempts = [row["attempts"] for row in rows.values()]
    assert max(pending_attempts) == 1  # no retry was used by the hold
