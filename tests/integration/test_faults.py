"""Faults in the dependencies and bad input: nothing lost, nothing sent without its record.

PostgreSQL, Redis and RabbitMQ are reached through a TCP fault proxy the test switches
between pass, reset (service down) and blackhole (partition). Real restarts stop private
instances (tests/integration/private_services.py), never the shared services.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import signal
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from sender.adapters.amqp_topology import dead_queue_name, delete_topology, page_message
from sender.adapters.postgres import connect_pool
from sender.core.page import Page
from sender.runtime.consumer_app import ConsumerApp
from sender.settings import Settings
from sender.testing import FakeInbox, Step
from sender.testing.fault_proxy import FaultProxy
from tests.integration.conftest import Names
from tests.integration.private_services import PrivatePostgres, PrivateRabbitMQ
from tests.integration.support import (
    AMQP_URL,
    DATABASE_URL,
    REDIS_URL,
    contact_rows,
    make_page,
    publish,
    running_consumer,
    wait_for_final,
)

MakeSettings = Callable[..., Settings]


def _via(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _target(url: str, port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or port


async def test_postgres_down_mid_run_holds_acks_and_new_sends_then_completes(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    async with FaultProxy(*_target(DATABASE_URL, 5432)) as proxy:
        settings = make_settings(database_url=_via(DATABASE_URL, proxy), dispatch_concurrency=10)
        async with running_consumer(settings) as app:
            for number in range(3):
                page = make_page(names.campaign, 200, page=number, prefix=f"p{number}")
                await publish(channel, names.queue, orjson.dumps(page))
            await inbox.wait_for_requests(100)
            proxy.set_mode("reset")
            acked_at_outage = app.metrics.value("sender_pages_total", outcome="acked")
            await asyncio.sleep(1.0)  # let attempts already under way finish
            posts_after_1s = inbox.received
            cpu_before = time.process_time()
            await asyncio.sleep(2.0)  # the outage: only time shows that nothing moves
            outage_cpu_s = time.process_time() - cpu_before
            posts_during = inbox.received - posts_after_1s
            acked_during = (
                app.metrics.value("sender_pages_total", outcome="acked") - acked_at_outage
            )
            proxy.set_mode("pass")
            rows = await wait_for_final(pool, names.campaign, 600, timeout=60)

    assert posts_during == 0
    assert acked_during == 0
    # I3: no hot loop while waiting for PostgreSQL (this process also runs the fake inbox).
    print(f"CPU during the 2 s PostgreSQL outage: {outage_cpu_s:.3f} s")
    assert outage_cpu_s < 0.2
    assert {row["status"] for row in rows.values()} == {"sent"}
    duplicates = sum(n - 1 for n in inbox.keys().values())
    assert duplicates <= 2 * settings.dispatch_concurrency


async def test_rabbitmq_connection_cut_mid_run_reconnects_and_consumes_again(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    async with FaultProxy(*_target(AMQP_URL, 5672)) as proxy:
        settings = make_settings(amqp_url=_via(AMQP_URL, proxy), dispatch_concurrency=10)
        async with running_consumer(settings) as app:
            await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 300)))
            await inbox.wait_for_requests(50)
            proxy.set_mode("reset")
            await asyncio.sleep(1.0)  # the broker is unreachable for a second
            proxy.set_mode("pass")
            await publish(
                channel, names.queue, orjson.dumps(make_page(names.campaign, 300, prefix="after"))
            )
            rows = await wait_for_final(pool, names.campaign, 600, timeout=60)
            queue = await channel.declare_queue(names.queue, passive=True)
            consumers = queue.declaration_result.consumer_count
            assert app.consumer.ready

    assert consumers >= 1
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(inbox.keys()) == 600


async def test_redis_blackholed_sends_nothing_without_a_token_then_completes(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    async with FaultProxy(*_target(REDIS_URL, 6379)) as proxy:
        settings = make_settings(redis_url=_via(REDIS_URL, proxy), dispatch_concurrency=10)
        async with running_consumer(settings):
            await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 300)))
            await inbox.wait_for_requests(50)
            proxy.set_mode("blackhole")
            partitioned_at = time.monotonic()
            cpu_before = time.process_time()
            await asyncio.sleep(3.0)  # the partition: only time shows that nothing is sent
            partition_cpu_s = time.process_time() - cpu_before
            late = [r for r in inbox.requests if r.received_at > partitioned_at + 0.8]
            proxy.set_mode("pass")
            rows = await wait_for_final(pool, names.campaign, 300, timeout=60)

    assert late == []
    print(f"CPU during the 3 s Redis partition: {partition_cpu_s:.3f} s")
    assert partition_cpu_s < 0.2  # I3: waiters wait; nobody spins
    assert {row["status"] for row in rows.values()} == {"sent"}


async def test_a_page_whose_handling_always_crashes_is_dead_lettered_at_the_delivery_limit(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    settings = make_settings(page_delivery_limit=2)
    deliveries: list[float] = []
    async with running_consumer(settings) as app:
        handle = app.consumer.handle_page

        async def crash_on_poison(page: Page) -> object:
            if page.page == 666:
                deliveries.append(time.monotonic())
                raise RuntimeError("a bug that hits this page every time")
            return await handle(page)

        app.consumer.handle_page = crash_on_poison  # type: ignore[assignment]
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 1, page=666)))
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 2, prefix="ok")))
        dead = await channel.declare_queue(dead_queue_name(names.queue), passive=True)
        arrived = asyncio.Event()
        await dead.consume(functools.partial(_note, arrived))
        async with asyncio.timeout(30):
            await arrived.wait()

    assert len(deliveries) == settings.page_delivery_limit + 1
    gaps = [b - a for a, b in itertools.pairwise(deliveries)]
    assert min(gaps) >= 0.9  # requeued after a pause, never in a hot loop
    rows = await contact_rows(pool, names.campaign)
    assert rows["ok-0000"]["status"] == "sent"


async def _note(arrived: asyncio.Event, message: AbstractIncomingMessage) -> None:
    await message.ack()
    arrived.set()


async def test_a_nul_character_is_rejected_as_an_invalid_page_not_a_crash_loop(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    page = make_page(names.campaign, 2)
    page["message"] = {"text": "hi\u0000"}
    async with running_consumer(make_settings()) as app:
        await publish(channel, names.queue, orjson.dumps(page))
        await app.wait_settled(1)
        assert app.metrics.value("sender_pages_total", outcome="dead") == 1
    assert inbox.requests == []


async def test_a_consumer_that_cannot_reach_the_broker_for_long_gives_up_to_be_restarted(
    make_settings: MakeSettings, names: Names, inbox: FakeInbox, channel, pool: asyncpg.Pool
) -> None:
    async with FaultProxy(*_target(AMQP_URL, 5672)) as proxy:
        settings = make_settings(amqp_url=_via(AMQP_URL, proxy))
        app = ConsumerApp(settings, broker_give_up_s=1.5)
        try:
            await app.start()
            assert not app.gave_up.is_set()
            proxy.set_mode("reset")
            cut_at = time.monotonic()
            async with asyncio.timeout(10):
                await app.gave_up.wait()
            gave_up_after = time.monotonic() - cut_at
        finally:
            await app.stop()

    assert 1.5 <= gave_up_after < 5


async def test_rabbitmq_partition_is_detected_by_heartbeat_and_the_run_completes(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    async with FaultProxy(*_target(AMQP_URL, 5672)) as proxy:
        settings = make_settings(
            amqp_url=_via(AMQP_URL, proxy) + "?heartbeat=1", dispatch_concurrency=10
        )
        async with running_consumer(settings) as app:
            await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 300)))
            await inbox.wait_for_requests(50)
            proxy.set_mode("blackhole")
            partitioned_at = time.monotonic()
            async with asyncio.timeout(15):
                while app.consumer.ready:  # noqa: ASYNC110 - aio-pika state, no event to await
                    await asyncio.sleep(0.1)
            noticed_after = time.monotonic() - partitioned_at
            proxy.set_mode("reset")  # the partition heals as a broken connection
            proxy.set_mode("pass")
            rows = await wait_for_final(pool, names.campaign, 300, timeout=60)

    # Three missed 1 s heartbeats plus aiormq's reader shutdown: seconds, not a hang (with
    # aiormq's default 60 s heartbeat it would be three minutes).
    assert noticed_after < 10
    assert {row["status"] for row in rows.values()} == {"sent"}


async def test_postgres_partition_is_detected_by_the_command_timeout_and_the_run_completes(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    async with FaultProxy(*_target(DATABASE_URL, 5432)) as proxy:
        settings = make_settings(database_url=_via(DATABASE_URL, proxy), dispatch_concurrency=10)
        async with running_consumer(settings) as app:
            await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 400)))
            await inbox.wait_for_requests(50)
            proxy.set_mode("blackhole")
            async with asyncio.timeout(30):
                await wait_until_clear(app.outcomes_writable)
            acked = app.metrics.value("sender_pages_total", outcome="acked")
            posts_at_detection = inbox.received
            await asyncio.sleep(1.0)  # held: only time shows that nothing is sent
            posts_after = inbox.received
            proxy.set_mode("reset")
            proxy.set_mode("pass")
            rows = await wait_for_final(pool, names.campaign, 400, timeout=60)

    assert acked == 0
    assert posts_after - posts_at_detection <= settings.dispatch_concurrency
    assert {row["status"] for row in rows.values()} == {"sent"}


async def wait_until_clear(event: asyncio.Event) -> None:
    """Wait for an event to be cleared (the writer clears `writable` on a failed write)."""
    while event.is_set():  # noqa: ASYNC110 - asyncio.Event has no "cleared" to await
        await asyncio.sleep(0.1)


async def test_a_429_storm_with_retry_after_slows_down_and_sends_everything(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    for i in range(200):
        inbox.script(f"c-{i:04d}", Step(429, retry_after="1"), Step(429, retry_after="1"))
    # A storm of per-recipient 429s: each contact waits out its own Retry-After (§4). With
    # the default RETRY_AFTER_SCOPE=inbox every 429 would hold the whole inbox instead, a
    # second each time, which test_inbox_health.py shows on its own.
    settings = make_settings(
        dispatch_backoff_base_ms=10, dispatch_concurrency=50, retry_after_scope="contact"
    )
    started = time.monotonic()
    async with running_consumer(settings) as app:
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 200)))
        await app.wait_settled(1)
        retries = [
            app.metrics.value("sender_dispatch_retries_total", attempt=str(n)) for n in (1, 2)
        ]
    elapsed = time.monotonic() - started

    rows = await contact_rows(pool, names.campaign)
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert retries == [200, 200]
    for i in range(0, 200, 37):
        first, second, third = (r.received_at for r in inbox.requests_for(f"c-{i:04d}"))
        assert second - first >= 0.98
        assert third - second >= 0.98
    assert elapsed < 15


@pytest.fixture
def broker_restart(private_rabbitmq: PrivateRabbitMQ) -> Iterator[PrivateRabbitMQ]:
    """The module's private RabbitMQ node; its application is running again afterwards."""
    yield private_rabbitmq
    if not private_rabbitmq.ready():
        private_rabbitmq.ctl("start_app")
        private_rabbitmq.ctl("await_startup")


async def test_rabbitmq_restart_mid_run_the_consumer_reconnects_and_consumes_again(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    pool: asyncpg.Pool,
    names: Names,
    broker_restart: PrivateRabbitMQ,
) -> None:
    broker = broker_restart
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    settings = make_settings(amqp_url=broker.url, dispatch_concurrency=10)
    try:
        async with running_consumer(settings) as app:
            await _publish_once(broker.url, names.queue, make_page(names.campaign, 300))
            await inbox.wait_for_requests(50)
            await asyncio.to_thread(broker.ctl, "stop_app")
            async with asyncio.timeout(15):
                while app.consumer.ready:  # noqa: ASYNC110 - aio-pika state, no event to await
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(broker.ctl, "start_app")
            await asyncio.to_thread(broker.ctl, "await_startup")
            page = make_page(names.campaign, 300, prefix="after")
            await _publish_once(broker.url, names.queue, page)
            rows = await wait_for_final(pool, names.campaign, 600, timeout=60)
            consumers = await _consumer_count(broker.url, names.queue)
    finally:
        await delete_topology(broker.url, names.queue)

    assert consumers >= 1
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(inbox.keys()) == 600


async def _publish_once(url: str, queue: str, page: dict[str, object]) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(page_message(orjson.dumps(page)), routing_key=queue)
    await connection.close()


async def _consumer_count(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    declared = await (await connection.channel()).declare_queue(queue, passive=True)
    await connection.close()
    return int(declared.declaration_result.consumer_count)


@pytest.fixture
def postgres_restart(private_postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The module's private PostgreSQL cluster; it is running again afterwards."""
    yield private_postgres
    if not private_postgres.running:
        private_postgres.start()


async def test_postgres_restart_mid_run_holds_then_completes_with_nothing_lost(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    names: Names,
    postgres_restart: PrivatePostgres,
) -> None:
    cluster = postgres_restart
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    settings = make_settings(database_url=cluster.url, dispatch_concurrency=10)
    try:
        async with running_consumer(settings) as app:
            await _publish_once(AMQP_URL, names.queue, make_page(names.campaign, 400))
            await inbox.wait_for_requests(50)
            await asyncio.to_thread(cluster.stop, signal.SIGINT)  # a fast shutdown
            acked_at_stop = app.metrics.value("sender_pages_total", outcome="acked")
            await asyncio.sleep(2.0)  # down: only time shows that nothing is acked
            acked_while_down = app.metrics.value("sender_pages_total", outcome="acked")
            await asyncio.to_thread(cluster.start)
            pool = await connect_pool(cluster.url, max_size=2)
            try:
                rows = await wait_for_final(pool, names.campaign, 400, timeout=60)
            finally:
                await pool.execute("DELETE FROM campaigns WHERE campaign_id = $1", names.campaign)
                await pool.close()
    finally:
        await delete_topology(AMQP_URL, names.queue)

    assert acked_while_down == acked_at_stop
    assert {row["status"] for row in rows.values()} == {"sent"}
    duplicates = sum(n - 1 for n in inbox.keys().values())
    assert duplicates <= 2 * settings.dispatch_concurrency
