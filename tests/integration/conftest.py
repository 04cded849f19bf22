"""Fixtures over the real PostgreSQL and RabbitMQ and a fake inbox; each cleans up after itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from sender.adapters.amqp_topology import delete_topology
from sender.adapters.migrate import migrate
from sender.adapters.postgres import connect_pool
from sender.adapters.redis_inbox_health import breaker_key, hold_key
from sender.adapters.redis_rate_backend import limiter_keys
from sender.settings import Settings
from sender.testing import FakeInbox
from tests.integration.private_services import (  # noqa: F401 - fixtures for every module
    _sweep_stale_private_services,
    private_postgres,
    private_rabbitmq,
    private_redis,
)
from tests.integration.support import AMQP_URL, DATABASE_URL, REDIS_URL, publish


@dataclass(frozen=True)
class Names:
    """Unique names for one test: campaign ids and queue."""

    token: str

    @property
    def campaign(self) -> str:
        return f"t-{self.token}"

    @property
    def queue(self) -> str:
        return f"test.{self.token}.pages"


# Inbox ids many tests share (make_page's default). Their breaker window and holds live in
# the shared Redis, so one test's 503s or Retry-After would reach into the next test.
SHARED_INBOXES = ("inbox-1",)


@pytest.fixture(autouse=True)
async def _fresh_shared_inbox_health() -> AsyncIterator[None]:
    """Every test starts with the shared inboxes' breaker and holds forgotten, and leaves
    them so (the test's own inbox ids are unique and cleaned by their tests)."""
    keys = [
        key
        for inbox_id in SHARED_INBOXES
        for key in (
            breaker_key(inbox_id),
            f"{breaker_key(inbox_id)}:win",
            f"{breaker_key(inbox_id)}:probe",
            hold_key(inbox_id),
        )
    ]
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.delete(*keys)
        yield
        await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def inbox_id(names: Names) -> AsyncIterator[str]:
    """A fresh inbox id (and its `-slow` twin) whose Redis buckets are removed afterwards."""
    inbox = f"in-{names.token}"
    yield inbox
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.delete(*limiter_keys(inbox), *limiter_keys(f"{inbox}-slow"))
    finally:
        await client.aclose()


@pytest.fixture
def names() -> Names:
    return Names(uuid.uuid4().hex[:12])


@pytest.fixture
async def pool(names: Names) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(DATABASE_URL, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.execute("DELETE FROM campaigns WHERE campaign_id LIKE $1", f"t-{names.token}%")
    await pool.close()


@pytest.fixture
async def channel(names: Names) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    yield channel
    await connection.close()
    await delete_topology(AMQP_URL, names.queue)


@pytest.fixture
async def inbox() -> AsyncIterator[FakeInbox]:
    async with FakeInbox() as fake:
        yield fake


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both HTTP transports must pass the same dispatch tests."""
    return str(request.param)


@dataclass(frozen=True)
class World:
    """What an integration test runs against: its names, the fake inbox, a broker channel,
    a ledger pool, and settings pointing at them all (`settings(**overrides)`)."""

    names: Names
    inbox: FakeInbox
    channel: aio_pika.abc.AbstractChannel
    pool: asyncpg.Pool
    settings: Callable[..., Settings]

    async def publish(self, page: dict[str, Any]) -> None:
        """Publish `page` to this test's queue as publishers must."""
        await publish(self.channel, self.names.queue, orjson.dumps(page))


@pytest.fixture
def world(
    names: Names,
    inbox: FakeInbox,
    channel: aio_pika.abc.AbstractChannel,
    pool: asyncpg.Pool,
    make_settings: Callable[..., Settings],
) -> World:
    return World(names, inbox, channel, pool, make_settings)


@pytest.fixture
def make_settings(names: Names, inbox: FakeInbox) -> Callable[..., Settings]:
    """Settings for one test: its own queue, the fake inbox, fast timings; override any field."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": AMQP_URL,
            "redis_url": REDIS_URL,
            "database_url": DATABASE_URL,
            "pages_queue": names.queue,
            "inbox_api_url": inbox.url_template,
            "metrics_port": 0,
            "dispatch_backoff_base_ms": 50,
            "dispatch_timeout_ms": 2000,
            "outcome_flush_ms": 20,
            "abort_poll_ms": 100,
            "status_cache_ttl_ms": 200,
            "inbox_rate_per_sec": 100000,
            "inbox_burst": 100000,
            "log_format": "console",
            "shutdown_grace_s": 5,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make
