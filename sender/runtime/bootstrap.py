"""Composition root: the one place that builds the real adapters from `Settings`.

Every entry point gets its wiring here: `sender run` and the demo's consumers
(`consumer_resources`, `build_gate`, `build_handler`), the CLI, the demo and the tests
(`operator_services`). Each builder takes its adapters as keyword parameters with the
real ones as defaults, so a test hands in its own pool or transport and the rest is
built as in production; what a builder opened itself, it closes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis

from sender.adapters.inbox_store import InboxStore
from sender.adapters.ledger import Ledger
from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.page_publisher import PagePublisher
from sender.adapters.postgres import close_pool, connect_pool
from sender.adapters.redis_inbox_health import RedisInboxHealth
from sender.adapters.redis_status import StatusCache
from sender.core.breaker import BreakerConfig
from sender.core.campaign_gate import CampaignGate
from sender.core.contact_sender import ContactSender
from sender.core.events import EventBus
from sender.core.in_flight import InFlight
from sender.core.inbox_gate import InboxGate, InboxGateConfig, InboxHealthStore
from sender.core.page_handler import (
    PAGE_SLICE_S,
    Backlog,
    Crowd,
    HandlerConfig,
    PageHandler,
    always_backlog,
    nobody_waiting,
)
from sender.core.policy import RetryPolicy
from sender.core.ports import InboxGatePort, OutcomeSink, RateLimiter
from sender.core.ratelimit import Rate
from sender.runtime.campaign_control import CampaignControl
from sender.runtime.inbox_control import InboxControl
from sender.settings import Settings

if TYPE_CHECKING:
    import httpx

Clock = Callable[[], float]


def redis_client(url: str) -> aioredis.Redis:
    """Commands wait for a free connection (up to 2 s) instead of failing at the pool limit."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=2, socket_timeout=2, socket_connect_timeout=2
    )
    return aioredis.Redis.from_pool(pool)


def process_owner_id() -> str:
    """A lease owner id unique to this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ConsumerResources:
    """The connections one consumer process runs on."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    # Pub/sub blocks on reads, so it gets a client without the socket read timeout.
    redis_pubsub: aioredis.Redis
    http: httpx.AsyncBaseTransport

    async def close(self) -> None:
        """Close every connection (the transport's pool first: it holds no state)."""
        await self.http.aclose()
        await self.redis.aclose()
        await self.redis_pubsub.aclose()
        await close_pool(self.pool)


async def consumer_resources(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    redis: aioredis.Redis | None = None,
    redis_pubsub: aioredis.Redis | None = None,
    http: httpx.AsyncBaseTransport | None = None,
) -> ConsumerResources:
    """Connect what was not handed in: PostgreSQL, Redis (commands and pub/sub), HTTP."""
    # Imported here, as in `build_handler`: the CLI's commands load this module too, and
    # aiohttp and httpx added ~130 ms to each of their starts.
    from sender.adapters.http_transport import build_transport

    return ConsumerResources(
        pool=pool or await connect_pool(settings.database_url),
        redis=redis or redis_client(settings.redis_url),
        redis_pubsub=redis_pubsub
        or aioredis.from_url(settings.redis_url, socket_connect_timeout=2),
        http=http or build_transport(settings),
    )


def build_gate(
    settings: Settings,
    statuses: StatusCache,
    shutdown: asyncio.Event,
    *,
    monotonic: Clock = time.monotonic,
) -> CampaignGate:
    """The campaign gate over the Redis status cache, with the settings' TTL and poll slice."""
    return CampaignGate(
        statuses.get,
        ttl_s=settings.status_cache_ttl_ms / 1000,
        poll_s=settings.abort_poll_ms / 1000,
        monotonic=monotonic,
        shutdown=shutdown,
    )


@dataclass(frozen=True)
class HandlerPorts:
    """What the page handler and its contact loop run on."""

    ledger: Ledger
    http: httpx.AsyncBaseTransport
    limiter: RateLimiter
    gate: CampaignGate
    outcomes: OutcomeSink
    events: EventBus
    in_flight: InFlight
    inbox_gate: InboxGatePort | None = None


def build_inbox_gate(
    settings: Settings,
    store: InboxHealthStore,
    campaigns: CampaignGate,
    events: EventBus,
    *,
    clock: Clock = time.time,
) -> InboxGate:
    """The inbox gate (breaker, Retry-After and operator holds) over the shared store."""
    s = settings
    max_wait_s = s.rate_limit_max_wait_ms / 1000
    config = InboxGateConfig(
        breaker=BreakerConfig.from_settings(s),
        max_wait_s=max_wait_s,
        # A probe takes a token (up to the longest token wait) and makes one attempt.
        probe_lease_s=max_wait_s + s.dispatch_timeout_ms / 1000 + 5,
        retry_after_cap_s=s.dispatch_backoff_cap_ms / 1000,
        retry_after_scope=s.retry_after_scope,
    )
    return InboxGate(
        store, campaigns, config, clock=clock, emit=events.emit, claim_ids=lambda: uuid.uuid4().hex
    )


def build_handler(
    settings: Settings,
    ports: HandlerPorts,
    *,
    owner: str,
    shutdown: asyncio.Event,
    monotonic: Clock = time.monotonic,
    backlog: Backlog = always_backlog,
    crowd: Crowd = nobody_waiting,
) -> PageHandler:
    """The page handler and its contact loop, configured from `settings`."""
    from sender.adapters.inbox_dispatcher import InboxDispatcher  # see consumer_resources

    s = settings
    sender = ContactSender(
        dispatcher=InboxDispatcher(ports.http, s),
        limiter=ports.limiter,
        gate=ports.gate,
        policy=RetryPolicy.from_settings(s),
        events=ports.events,
        max_token_wait_s=s.rate_limit_max_wait_ms / 1000,
        http_slots=asyncio.Semaphore(s.dispatch_concurrency),
        monotonic=monotonic,
        inbox_gate=ports.inbox_gate,
        history=ports.ledger,
    )
    return PageHandler(
        ledger=ports.ledger,
        sender=sender,
        outcomes=ports.outcomes,
        config=HandlerConfig(
            owner=owner,
            lease_s=s.claim_lease_ms / 1000,
            deadline_s=s.page_deadline_s,
            contacts_per_page=s.dispatch_concurrency,
            slice_s=min(PAGE_SLICE_S, s.page_deadline_s),
            held_poll_s=min(1.0, s.claim_lease_ms / 4000),
        ),
        monotonic=monotonic,
        shutdown=shutdown,
        in_flight=ports.in_flight,
        backlog=backlog,
        crowd=crowd,
    )


@dataclass(frozen=True)
class OperatorServices:
    """What operator commands run on: the ledger's queries, inbox settings, campaign control."""

    ledger: OperatorLedger
    inboxes: InboxStore
    statuses: StatusCache
    control: CampaignControl
    inbox_control: InboxControl


@asynccontextmanager
async def operator_services(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    redis: aioredis.Redis | None = None,
    publisher: PagePublisher | None = None,
) -> AsyncIterator[OperatorServices]:
    """Open what was not handed in (a small pool, Redis, a confirmed publisher); close it after.

    The publisher connects to RabbitMQ but declares nothing until it first publishes, so
    commands that publish nothing create no queues.
    """
    async with AsyncExitStack() as stack:
        if pool is None:
            pool = await connect_pool(settings.database_url, max_size=2)
            stack.push_async_callback(close_pool, pool)
        if redis is None:
            redis = aioredis.from_url(
                settings.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
            stack.push_async_callback(redis.aclose)
        if publisher is None:
            publisher = await stack.enter_async_context(PagePublisher(settings))
        ledger = OperatorLedger(pool)
        statuses = StatusCache(redis, ledger.campaign_status, settings.status_cache_ttl_ms)
        inboxes = InboxStore(pool)
        control = CampaignControl(settings, ledger, statuses, publisher)
        yield OperatorServices(
            ledger=ledger,
            inboxes=inboxes,
            statuses=statuses,
            control=control,
            inbox_control=InboxControl(
                Rate(settings.inbox_rate_per_sec, settings.inbox_burst),
                ledger,
                inboxes,
                RedisInboxHealth(redis, inboxes.is_held),
                control,
            ),
        )
