"""Pages through the real broker and ledger: duplicates, bad input, probes, the CLI's view."""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import asyncpg
import httpx
import orjson

from sender.adapters.amqp_topology import DEAD_REASON_HEADER, dead_queue_name
from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.integration.conftest import Names
from tests.integration.support import (
    contact_rows,
    declare,
    make_page,
    publish,
    run_cli,
    running_consumer,
    settings_env,
)

MakeSettings = Callable[..., Settings]


async def test_same_page_published_twice_posts_each_contact_once(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    settings = make_settings(prefetch_pages=2)
    page = orjson.dumps(make_page(names.campaign, 50))
    inbox.script("c-0007", Step(400))
    async with running_consumer(settings) as app:
        await publish(channel, names.queue, page)
        await publish(channel, names.queue, page)
        await app.wait_settled(2)

    assert len(inbox.keys()) == 50
    assert set(inbox.keys().values()) == {1}
    result = run_cli("campaign", "status", names.campaign, "--json", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == {
        "campaign_id": names.campaign,
        "status": "running",
        "inbox_id": "inbox-1",
        "counts": {"pending": 0, "sending": 0, "sent": 49, "failed": 1},
        "total": 50,
        "status_reason": None,
        "deferred": 0,
    }


async def test_redelivered_page_skips_contacts_with_a_final_outcome(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    settings = make_settings()
    async with running_consumer(settings) as app:
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 5)))
        await app.wait_settled(1)
        # A later page repeats three of them and adds two new contacts.
        bigger = make_page(names.campaign, 7)
        bigger["contacts"] = bigger["contacts"][3:]
        await publish(channel, names.queue, orjson.dumps(bigger))
        await app.wait_settled(2)

    assert sorted(inbox.keys()) == [f"{names.campaign}:c-{i:04d}" for i in range(7)]
    assert set(inbox.keys().values()) == {1}
    rows = await contact_rows(pool, names.campaign)
    assert {row["status"] for row in rows.values()} == {"sent"}


async def test_bad_pages_are_dead_lettered_with_reasons_and_good_pages_still_flow(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    settings = make_settings()
    invalid = make_page(names.campaign, 1)
    invalid["contacts"][0]["contact_id"] = "has space"
    unknown_field = {**make_page(names.campaign, 1), "priority": "high"}
    bad_pages = {
        b"{not json": "malformed_json",
        orjson.dumps(invalid): "invalid_page: contacts.0.contact_id:",
        orjson.dumps(make_page(names.campaign, 1500)): "too_large",
        orjson.dumps(unknown_field): "invalid_page: priority:",
    }
    async with running_consumer(settings) as app:
        for body in bad_pages:
            await publish(channel, names.queue, body)
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 3)))
        await app.wait_settled(len(bad_pages) + 1)
        assert app.metrics.value("sender_pages_total", outcome="dead") == len(bad_pages)
        assert app.metrics.value("sender_pages_total", outcome="acked") == 1

    dead = await channel.get_queue(dead_queue_name(names.queue))
    reasons = {}
    while (message := await dead.get(fail=False)) is not None:
        reasons[message.body] = str(message.headers[DEAD_REASON_HEADER])
        await message.ack()
    assert reasons.keys() == bad_pages.keys()
    for body, prefix in bad_pages.items():
        assert reasons[body].startswith(prefix), reasons[body]
    assert "+5511" not in "".join(reasons.values())
    assert len(inbox.keys()) == 3


async def test_queue_is_a_quorum_queue_with_delivery_limit_and_dead_letter_route(
    make_settings: MakeSettings, channel: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    settings = make_settings(page_delivery_limit=7)
    await declare(channel, settings)
    # Redeclaring with the same arguments succeeds; different ones would close the channel.
    queue = await channel.declare_queue(
        names.queue,
        durable=True,
        passive=False,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 7,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_queue_name(names.queue),
        },
    )
    assert queue.name == names.queue


async def test_probes_and_metrics_are_served(
    make_settings: MakeSettings, inbox: FakeInbox, channel, pool: asyncpg.Pool, names: Names
) -> None:
    async with running_consumer(make_settings()) as app:
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 2)))
        await app.wait_settled(1)
        assert app.probes is not None
        base = f"http://127.0.0.1:{app.probes.port}"
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{base}/healthz")
            ready = await client.get(f"{base}/readyz")
            metrics = (await client.get(f"{base}/metrics")).text

    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "rabbitmq": True,
        "redis": True,
        "postgres": True,
        "background": True,
    }
    assert 'sender_contacts_total{mode="consumer",outcome="sent"} 2.0' in metrics
    assert 'sender_dispatch_attempts_total{mode="consumer",result="2xx"} 2.0' in metrics
    assert 'sender_pages_total{mode="consumer",outcome="acked"} 1.0' in metrics
    assert 'sender_rate_limit_wait_seconds_count{mode="consumer"} 2.0' in metrics
    assert 'sender_dispatch_duration_seconds_count{mode="consumer"} 2.0' in metrics
    assert 'sender_contacts_in_flight{mode="consumer"} 0.0' in metrics
