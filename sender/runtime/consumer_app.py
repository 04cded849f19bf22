"""One consumer process: start its parts in order, run them, drain on stop (wiring: bootstrap)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from sender.adapters.auto_pause_ledger import AutoPauseLedger
from sender.adapters.deferred_ledger import DeferredContacts
from sender.adapters.inbox_store import InboxStore
from sender.adapters.ledger import Ledger
from sender.adapters.migrate import migrate
from sender.adapters.page_consumer import PageConsumer
from sender.adapters.postgres import autovacuum_enabled
from sender.adapters.redis_inbox_health import RedisInboxHealth
from sender.adapters.redis_inbox_health import listen as listen_inbox_health
from sender.adapters.redis_rate_backend import RedisBucketStore
from sender.adapters.redis_status import StatusCache, listen
from sender.core.auto_pause import AutoPausePolicy, AutoPauseWatch
from sender.core.campaign_gate import CampaignGate
from sender.core.events import EventBus
from sender.core.in_flight import InFlight
from sender.core.outcome_writer import OutcomeWriter
from sender.core.ports import ContactOutcome
from sender.core.rate_book import RateBook
from sender.core.ratelimit import Rate
from sender.core.redrive import Redrive, RedriveConfig
from sender.core.token_pump import TokenPump
from sender.core.waits import wait_any
from sender.errors import DependencyUnavailable
from sender.runtime.bootstrap import (
    ConsumerResources,
    HandlerPorts,
    build_gate,
    build_handler,
    build_inbox_gate,
    consumer_resources,
    process_owner_id,
)
from sender.runtime.logs import log_event
from sender.runtime.metrics import Metrics
from sender.runtime.probes import ProbeServer
from sender.runtime.supervisor import Supervisor
from sender.settings import Settings

log = logging.getLogger(__name__)


# How long a consumer may stay disconnected from RabbitMQ before it exits non-zero.
BROKER_GIVE_UP_S = 60.0


class ConsumerApp:
    """One consumer process: ledger, dispatcher, limiter, gate, handler, consumer, probes."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        broker_give_up_s: float = BROKER_GIVE_UP_S,
        *,
        connect: Callable[[Settings], Awaitable[ConsumerResources]] = consumer_resources,
        prepare_database: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.run_mode)
        self.owner = process_owner_id()
        self.shutdown = asyncio.Event()
        self.events = EventBus([self.metrics.observe, log_event])
        self.probes: ProbeServer | None = None
        self._connect = connect
        self._prepare_database = prepare_database
        self._resources: ConsumerResources | None = None
        self._writer: OutcomeWriter | None = None
        self._consumer: PageConsumer | None = None
        self._background: list[asyncio.Task[None]] = []
        self._limiter: TokenPump | None = None
        self.gate: CampaignGate | None = None
        self.listening = asyncio.Event()
        self.inbox_health_listening = asyncio.Event()
        self.gave_up = asyncio.Event()
        self._broker_give_up_s = broker_give_up_s
        self.supervisor = Supervisor()
        self.in_flight = InFlight()

    async def start(self) -> None:
        """Connect everything, apply migrations, start consuming and serving probes."""
        s = self.settings
        res = self._resources = await self._connect(s)
        pool = res.pool
        if self._prepare_database:
            await _prepare_database(pool)
        redis, pubsub_redis = res.redis, res.redis_pubsub
        ledger = Ledger(pool)
        inbox_store = InboxStore(pool)
        rates = RateBook(Rate(s.inbox_rate_per_sec, s.inbox_burst), inbox_store.rates)
        await rates.refresh()
        spawn = self.supervisor.spawn
        limiter = self._limiter = TokenPump(RedisBucketStore(redis), rates.rate, spawn=spawn)
        statuses = StatusCache(redis, ledger.campaign_status, s.status_cache_ttl_ms)
        auto_pause = AutoPauseWatch(
            AutoPauseLedger(pool),
            statuses.announce,
            self.events,
            AutoPausePolicy(s.auto_pause_window, s.auto_pause_failure_ratio),
        )

        async def write(batch: Sequence[ContactOutcome]) -> None:
            await ledger.record(batch, self.owner)
            auto_pause.notice(batch)

        self._writer = OutcomeWriter(write, flush_s=s.outcome_flush_ms / 1000)
        self._writer.start(spawn)
        self.gate = build_gate(s, statuses, self.shutdown)
        inbox_gate = build_inbox_gate(
            s, RedisInboxHealth(redis, inbox_store.is_held), self.gate, self.events
        )
        handler = build_handler(
            s,
            HandlerPorts(
                ledger,
                res.http,
                limiter,
                self.gate,
                self._writer,
                self.events,
                self.in_flight,
                inbox_gate,
            ),
            owner=self.owner,
            shutdown=self.shutdown,
            backlog=self._pages_waiting,
            crowd=limiter.waiting,
        )
        self._consumer = PageConsumer(s, handler.handle, self.events)
        self.probes = ProbeServer(
            self.metrics.registry,
            {
                "rabbitmq": self._consumer_ready,
                "redis": self._redis_ready,
                "postgres": self._pg_ready,
                "background": self._background_ready,
            },
        )
        await self.probes.start(s.metrics_port, s.metrics_host)
        await self._consumer.start()
        gate = self.gate
        consumer = self._consumer
        redrive = Redrive(
            DeferredContacts(pool),
            lambda page: consumer.publish(page.to_json(), s.pages_queue),
            asyncio.sleep,
            RedriveConfig(page_size=s.max_page_contacts, max_page_bytes=s.max_page_bytes),
        )
        self._background = [
            spawn("redrive", redrive.run_forever),
            spawn("auto-pause", auto_pause.run_forever),
            spawn("lease-keeper", lambda: self._keep_leases(ledger)),
            spawn("rate-refresh", rates.refresh_forever),
            spawn("broker-watchdog", self._watch_broker),
            spawn(
                "status-listener",
                lambda: listen(pubsub_redis, gate.status_changed, self.listening),
            ),
            spawn("inbox-health-reporter", inbox_gate.flush_forever),
            spawn(
                "inbox-health-listener",
                lambda: listen_inbox_health(
                    pubsub_redis, inbox_gate.changed, self.inbox_health_listening
                ),
            ),
        ]
        log.info("consumer started", extra={"owner": self.owner, "metrics_port": self.probes.port})

    async def _pages_waiting(self) -> bool:
        """Whether other pages wait in the queue: a page yields its time slice only then."""
        return self._consumer is None or await self._consumer.pages_waiting()

    async def stop(self) -> None:
        """Graceful drain: stop consuming, finish attempts in flight within the grace, close."""
        grace = self.settings.shutdown_grace_s
        log.info("shutting down", extra={"grace_s": grace})
        if self._consumer is not None:
            await self._consumer.stop_consuming()
        self.shutdown.set()
        if self.gate is not None:
            self.gate.wake_all()
        cancelled = await self._consumer.drain(grace) if self._consumer is not None else 0
        if self._resources is not None:
            await _stop_tasks(self._background, self._resources.redis_pubsub.aclose)
        if self._limiter is not None:
            await self._limiter.close()
        if self._writer is not None:
            await self._writer.close()
        if self._consumer is not None:
            await self._consumer.close()
        if self.probes is not None:
            await self.probes.stop()
        if self._resources is not None:
            await self._resources.close()
        log.info("stopped", extra={"pages_cut_at_grace": cancelled})

    @property
    def consumer(self) -> PageConsumer:
        """The RabbitMQ side (started)."""
        assert self._consumer is not None
        return self._consumer

    @property
    def outcomes_writable(self) -> asyncio.Event:
        """Set while outcomes can be written to the ledger."""
        assert self._writer is not None
        return self._writer.writable

    async def wait_settled(self, pages: int) -> None:
        """Wait until this consumer has settled `pages` deliveries."""
        assert self._consumer is not None
        await self._consumer.wait_settled(pages)

    async def _watch_broker(self) -> None:
        """Give up (so the pod restarts) when the broker stays unreachable or unconsumed.

        aio-pika's robust connection reconnects by itself; this only catches the case where
        it never manages to, instead of idling forever as a pod that looks alive.
        """
        down_since: float | None = None
        while True:
            await asyncio.sleep(min(1.0, self._broker_give_up_s / 4))
            if self.consumer.ready:
                down_since = None
                continue
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= self._broker_give_up_s:
                log.error("not consuming for %.0f s; giving up", now - down_since)
                self.gave_up.set()
                return

    async def _keep_leases(self, ledger: Ledger) -> None:
        """Renew the leases of the contacts in flight here, and only those."""
        lease_s = self.settings.claim_lease_ms / 1000
        while True:
            await asyncio.sleep(lease_s / 3)
            campaigns, contacts = self.in_flight.snapshot()
            try:
                await ledger.renew_leases(self.owner, lease_s, campaigns, contacts)
            except DependencyUnavailable as error:
                log.warning("lease renewal failed", extra={"error": str(error)})

    async def _background_ready(self) -> bool:
        return self.supervisor.healthy

    async def _consumer_ready(self) -> bool:
        return self._consumer is not None and self._consumer.ready

    async def _redis_ready(self) -> bool:
        assert self._resources is not None
        return bool(await self._resources.redis.ping())

    async def _pg_ready(self) -> bool:
        assert self._resources is not None
        async with self._resources.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT true"))


async def _prepare_database(pool: asyncpg.Pool) -> None:
    """Apply migrations, and warn when autovacuum is off (the ledger then slows down)."""
    async with pool.acquire() as conn:
        await migrate(conn)
        if not await autovacuum_enabled(conn):
            log.warning(
                "postgres autovacuum is off: every contact leaves two dead rows, so the"
                " ledger slows down as they pile up; turn it on or VACUUM contacts often"
            )


# How long a cancelled background task gets to end before its connection is closed under it.
_BACKGROUND_STOP_S = 0.5


async def _stop_tasks(
    tasks: list[asyncio.Task[None]], close_pubsub: Callable[[], Awaitable[None]]
) -> None:
    """Cancel `tasks` and wait for them; close the pub/sub client if one will not end.

    redis-py's pub/sub read can swallow a cancellation that lands at the wrong moment
    (seen in about half of the stops right after a start on a loaded machine), leaving
    the status listener blocked on its socket and `sender run` unable to exit. Closing
    the client ends that read, and the listener then sees it was asked to stop.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=_BACKGROUND_STOP_S)
    if pending:
        log.warning(
            "background tasks ignored cancellation; closing their connections",
            extra={"tasks": sorted(task.get_name() for task in pending)},
        )
        await close_pubsub()
        more, pending = await asyncio.wait(pending, timeout=_BACKGROUND_STOP_S)
        done |= more
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())
    if pending:
        log.error("background tasks still running at exit", extra={"tasks": len(pending)})


async def run_until_stopped(settings: Settings, stop: asyncio.Event) -> bool:
    """Run a consumer until `stop` is set (or it gives up on the broker), then drain.

    Returns False when it gave up (on the broker, or on a background task that kept
    crashing), so the process exits non-zero and its pod restarts.
    """
    app = ConsumerApp(settings)
    try:
        await app.start()
        await wait_any(stop, app.gave_up, app.supervisor.failed, seconds=None)
    finally:
        await app.stop()
    return not (app.gave_up.is_set() or app.supervisor.failed.is_set())
