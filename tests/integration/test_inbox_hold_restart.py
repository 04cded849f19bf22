"""DESIGN.md §11: `inbox pause` is stored in PostgreSQL, so a Redis restart does not lift it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from sender.adapters.redis_inbox_health import hold_key
from sender.settings import Settings
from sender.testing import FakeInbox
from tests.integration.conftest import Names
from tests.integration.private_services import PrivateRedis
from tests.integration.support import (
    contact_rows,
    make_page,
    publish,
    run_cli,
    settings_env,
    start_consumer_process,
    wait_for_final,
)

MakeSettings = Callable[..., Settings]


@pytest.fixture
async def private_client(private_redis: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(private_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def held_inbox(names: Names, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A fresh inbox id whose durable hold is removed afterwards (its Redis goes with it)."""
    inbox_id = f"hr-{names.token}-held"
    yield inbox_id
    await pool.execute("DELETE FROM inbox_holds WHERE inbox_id = $1", inbox_id)


async def _claimed(pool: asyncpg.Pool, campaign_id: str, count: int) -> None:
    """Until the consumer (another process) has claimed `count` contacts of the campaign."""
    deadline = time.monotonic() + 30
    while len(await contact_rows(pool, campaign_id)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{campaign_id}: page not claimed")
        await asyncio.sleep(0.05)


async def _reloaded_or_posted(
    redis: aioredis.Redis, inbox: FakeInbox, inbox_id: str, timeout_s: float
) -> None:
    """Until a consumer has reloaded the hold into Redis, or has POSTed to the inbox."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await redis.hget(hold_key(inbox_id), "synced") is not None:
            return
        if any(r.inbox_id == inbox_id for r in inbox.requests):
            return
        await asyncio.sleep(0.05)  # another process writes Redis: nothing to await but a look


async def test_inbox_pause_outlives_a_redis_restart_and_resume_then_sends_the_contacts(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    held_inbox: str,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    private_redis: PrivateRedis,
    private_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    held, other, contacts = held_inbox, f"hr-{names.token}-other", 40
    other_campaign = f"{names.campaign}-other"
    settings = make_settings(redis_url=private_redis.url, dispatch_concurrency=20)
    env = settings_env(settings)
    paused = await asyncio.to_thread(run_cli, "inbox", "pause", held, env=env)
    assert paused.returncode == 0, paused.stderr
    consumer = await start_consumer_process(settings, str(tmp_path / "consumer.log"))
    try:
        page = make_page(names.campaign, contacts, inbox_id=held, prefix="h")
        await publish(channel, names.queue, orjson.dumps(page))
        await _claimed(pool, names.campaign, contacts)  # the consumer holds them now
        private_redis.stop()  # SIGKILL; it keeps nothing on disk, so it comes back empty
        private_redis.start()
        emptied = await private_client.exists(hold_key(held))
        page = make_page(other_campaign, contacts, inbox_id=other, prefix="o")
        await publish(channel, names.queue, orjson.dumps(page))
        await wait_for_final(pool, other_campaign, contacts, timeout=30)
        await _reloaded_or_posted(private_client, inbox, held, timeout_s=10)
        reloaded = await private_client.hget(hold_key(held), "operator")
        posted_while_held = [r for r in inbox.requests if r.inbox_id == held]
        resumed = await asyncio.to_thread(run_cli, "inbox", "resume", held, env=env)
        assert resumed.returncode == 0, resumed.stderr
        rows = await wait_for_final(pool, names.campaign, contacts, timeout=30)
    finally:
        consumer.stop()

    assert emptied == 0
    assert posted_while_held == []
    assert reloaded == b"1"  # the consumer reloaded the hold from PostgreSQL
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert {row["attempts"] for row in rows.values()} == {1}  # the hold used no retry
    assert len({r.contact_id for r in inbox.requests if r.inbox_id == held}) == contacts
