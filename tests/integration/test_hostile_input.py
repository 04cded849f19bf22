"""Hostile pages against a running consumer: each is dead-lettered at once with a bounded
reason, nothing stays unacked, good pages still flow, and the inbox's path never moves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from sender.adapters.amqp_topology import DEAD_REASON_HEADER, dead_queue_name
from sender.adapters.migrate import migrate
from sender.adapters.postgres import connect_pool
from sender.testing import FakeInbox
from tests.integration.conftest import World
from tests.integration.support import DATABASE_URL, make_page, publish, running_consumer

DEAD_WITHIN_S = 1.0
CRLF_TO = "+5511999990001\r\nX-Injected: yes"


def _nested_json(depth: int) -> bytes:
    """A JSON object `depth` levels deep (orjson.dumps refuses past 254)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def _with_message(page: dict[str, Any], message_json: bytes) -> bytes:
    return orjson.dumps({**page, "message": "@M"}).replace(b'"@M"', message_json)


def _bad_pages(campaign: str) -> dict[bytes, str]:
    """Body -> expected start of its dead reason."""
    huge_key = {**make_page(campaign, 1), "k" * 100_000: 1}
    dots = make_page(campaign, 1, inbox_id="..")
    page_true = {**make_page(campaign, 1), "page": True}
    return {
        _with_message(make_page(campaign, 1), _nested_json(600)): "invalid_page: message: nested",
        _with_message(make_page(campaign, 1), _nested_json(300)): "invalid_page: message: nested",
        orjson.dumps(dots): "invalid_page: inbox_id: ",
        orjson.dumps(huge_key): "invalid_page: kkkk",
        orjson.dumps(page_true): "invalid_page: page: ",
    }


async def _drain_dead(channel: aio_pika.abc.AbstractChannel, queue: str) -> dict[bytes, str]:
    dead = await channel.get_queue(dead_queue_name(queue))
    reasons: dict[bytes, str] = {}
    while (message := await dead.get(fail=False)) is not None:
        reasons[message.body] = str((message.headers or {})[DEAD_REASON_HEADER])
        await message.ack()
    return reasons


async def _ready_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


def _only_inbox_paths(inbox: FakeInbox) -> None:
    assert inbox.paths
    for path in inbox.paths:
        method, _, target = path.partition(" ")
        parts = target.split("/")
        assert method == "POST", path
        assert len(parts) == 4, path
        assert (parts[0], parts[1], parts[3]) == ("", "inboxes", "messages"), path
        assert parts[2] not in ("", ".", ".."), path


async def test_hostile_pages_are_dead_lettered_at_once_and_good_pages_still_flow(
    world: World,
) -> None:
    names, inbox, channel = world.names, world.inbox, world.channel
    bad = _bad_pages(names.campaign)
    crlf = make_page(f"{names.campaign}-crlf", 1)
    crlf["contacts"][0]["to"] = CRLF_TO
    async with running_consumer(world.settings()) as app:
        for body in bad:
            await publish(channel, names.queue, body)
        async with asyncio.timeout(DEAD_WITHIN_S):
            await app.wait_settled(len(bad))
        assert app.metrics.value("sender_pages_total", outcome="dead") == len(bad)
        await world.publish(crlf)
        await world.publish(make_page(names.campaign, 3))
        await app.wait_settled(len(bad) + 2)
        assert app.metrics.value("sender_pages_total", outcome="acked") == 2
    assert await _ready_count(channel, names.queue) == 0  # nothing was left unacked

    reasons = await _drain_dead(channel, names.queue)
    assert reasons.keys() == bad.keys()
    for body, prefix in bad.items():
        assert reasons[body].startswith(prefix), reasons[body]
        assert len(reasons[body]) <= 200
        assert reasons[body].isprintable()
    assert len(inbox.keys()) == 4
    [sent_crlf] = [r for r in inbox.requests if r.body["campaign_id"] == crlf["campaign_id"]]
    assert sent_crlf.body["to"] == CRLF_TO
    assert b"\r" not in sent_crlf.raw_body
    assert b"\n" not in sent_crlf.raw_body
    _only_inbox_paths(inbox)


async def test_crlf_in_to_is_sent_only_json_escaped(world: World) -> None:
    page = make_page(world.names.campaign, 1)
    page["contacts"][0]["to"] = CRLF_TO
    async with running_consumer(world.settings()) as app:
        await world.publish(page)
        await app.wait_settled(1)

    [request] = world.inbox.requests
    assert request.body["to"] == CRLF_TO
    assert b"\r" not in request.raw_body
    assert b"\n" not in request.raw_body
    assert b'"+5511999990001\\r\\nX-Injected: yes"' in request.raw_body
    assert world.inbox.paths == ["POST /inboxes/inbox-1/messages"]


@pytest.fixture
async def strict_database() -> AsyncIterator[str]:
    """A private database whose contacts hold at most 20-char addresses: a ledger that
    refuses what a valid page holds (as a value out of PostgreSQL's range would)."""
    name = f"sender_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        pool = await connect_pool(url, max_size=1)
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute("ALTER TABLE contacts ALTER COLUMN to_address TYPE varchar(20)")
        await pool.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_page_the_ledger_refuses_is_dead_lettered_not_redelivered(
    world: World, strict_database: str
) -> None:
    names, channel = world.names, world.channel
    refused = make_page(names.campaign, 2)
    refused["contacts"][1]["to"] = "+55" + "1" * 30
    settings = world.settings(database_url=strict_database)
    async with running_consumer(settings) as app:
        await world.publish(refused)
        async with asyncio.timeout(DEAD_WITHIN_S):
            await app.wait_settled(1)
        await world.publish(make_page(f"{names.campaign}-ok", 2))
        await app.wait_settled(2)
        assert app.metrics.value("sender_pages_total", outcome="dead") == 1
        assert app.metrics.value("sender_pages_total", outcome="requeued") == 0
    assert await _ready_count(channel, names.queue) == 0

    reasons = await _drain_dead(channel, names.queue)
    assert list(reasons.values()) == [
        "invalid_page: the ledger refused it: StringDataRightTruncationError (22001)"
    ]
    assert sorted(world.inbox.keys()) == [f"{names.campaign}-ok:c-000{i}" for i in range(2)]
