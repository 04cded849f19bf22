"""Streaming `campaign start`: chunked storage, pages per stored chunk, idempotent re-runs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import aio_pika
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from sender.adapters.ledger import COMPLETE_SQL
from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.page_publisher import PagePublisher
from sender.adapters.redis_status import StatusCache
from sender.core.contact_blocks import read_blocks
from sender.core.contacts_csv import ContactChunk, read_chunks
from sender.errors import InvalidContacts
from sender.runtime.campaign_control import CampaignControl
from sender.runtime.campaign_start import Chunk, StartProgress
from sender.settings import Settings
from tests.integration.conftest import Names

MakeSettings = Callable[..., Settings]
CHUNK = 50
Opener = Callable[[], AbstractAsyncContextManager[CampaignControl]]


@pytest.fixture
async def control(
    make_settings: MakeSettings, pool: asyncpg.Pool
) -> AsyncIterator[Callable[[], AbstractAsyncContextManager[CampaignControl]]]:
    """Opens a CampaignControl with its own broker connection (a `sender` process)."""
    settings = make_settings()
    redis = aioredis.from_url(settings.redis_url)
    ledger = OperatorLedger(pool)

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[CampaignControl]:
        async with PagePublisher(settings) as publisher:
            yield CampaignControl(
                settings, ledger, StatusCache(redis, ledger.campaign_status, 200), publisher
            )

    yield opened
    await redis.aclose()


def _csv_chunks(lines: list[str], campaign: str) -> Iterator[Chunk]:
    return read_chunks(lines, CHUNK)


def _plain_blocks(lines: list[str], campaign: str) -> Iterator[Chunk]:
    """The file as `sender campaign start` reads it: plain blocks of CHUNK rows."""
    source = io.BytesIO("".join(lines).encode())
    return read_blocks(source, campaign, block_bytes=CHUNK * _ROW_BYTES)


Reader = Callable[[list[str], str], Iterator[Chunk]]
# Each file read both ways: csv chunks (staged and merged), plain blocks (COPY into contacts).
READERS = pytest.mark.parametrize("reader", [_csv_chunks, _plain_blocks], ids=["csv", "plain"])
_ROW_BYTES = len("c-00000,+5511000000000,N00000\n")


def _csv(rows: int, duplicate_at: int | None = None) -> list[str]:
    lines = ["contact_id,to,name\n"]
    for i in range(rows):
        contact = 0 if i == duplicate_at else i
        lines.append(f"c-{contact:05d},+5511{i:09d},N{i:05d}\n")
    return lines


async def _published_ids(channel: aio_pika.abc.AbstractChannel, queue: str) -> list[str]:
    """Every contact id in the pages waiting in `queue` (drains it)."""
    declared = await channel.declare_queue(queue, passive=True)
    ids: list[str] = []
    while (message := await declared.get(fail=False, no_ack=True)) is not None:
        ids += [c["contact_id"] for c in orjson.loads(message.body)["contacts"]]
    return ids


def _interrupted(chunks: Iterator[ContactChunk], after: int, released: threading.Event):
    """The chunks, hanging before chunk `after` + 1 as a start that is about to be killed."""
    for number, chunk in enumerate(chunks):
        if number == after:
            released.wait(30)
            return
        yield chunk


@READERS
async def test_a_start_killed_halfway_and_run_again_stores_each_contact_once_and_publishes_all(
    control: Opener,
    pool: asyncpg.Pool,
    channel,
    names: Names,
    make_settings: MakeSettings,
    reader: Reader,
) -> None:
    rows = 6 * CHUNK
    two_stored = asyncio.Event()
    released = threading.Event()

    def watch(progress: StartProgress) -> None:
        if progress.stored >= 2 * CHUNK:
            two_stored.set()

    async def killed_start() -> None:
        async with control() as killed:
            await killed.start(
                names.campaign,
                "inbox-1",
                {"text": "hi"},
                _interrupted(reader(_csv(rows), names.campaign), 3, released),
                page_size=20,
                on_progress=watch,
            )

    first = asyncio.create_task(killed_start())
    await asyncio.wait_for(two_stored.wait(), 30)
    first.cancel()  # the kill: whatever was in flight is rolled back or never sent
    with pytest.raises(asyncio.CancelledError):
        await first
    released.set()
    stored_before = await pool.fetchval(
        "SELECT count(*) FROM contacts WHERE campaign_id = $1", names.campaign
    )
    assert 2 * CHUNK <= stored_before < rows

    async with control() as again:
        published = await again.start(
            names.campaign, "inbox-1", {"text": "hi"}, reader(_csv(rows), names.campaign), 20
        )

    assert published.contacts == rows  # nothing was sent yet: every contact still pending
    stored = await pool.fetch(
        "SELECT contact_id, count(*) OVER () AS n FROM contacts WHERE campaign_id = $1",
        names.campaign,
    )
    assert len(stored) == rows
    queued = await _published_ids(channel, make_settings().pages_queue)
    assert set(queued) == {f"c-{i:05d}" for i in range(rows)}
    summary = await OperatorLedger(pool).summary(names.campaign)
    assert summary is not None
    assert summary.counts["pending"] == rows
    assert await OperatorLedger(pool).count_drift(names.campaign) == []


@READERS
async def test_a_duplicate_in_a_later_chunk_is_refused_with_its_line_before_its_chunk_is_published(
    control: Opener,
    pool: asyncpg.Pool,
    channel,
    names: Names,
    make_settings: MakeSettings,
    reader: Reader,
) -> None:
    chunks = reader(_csv(3 * CHUNK, duplicate_at=CHUNK + 7), names.campaign)

    with pytest.raises(InvalidContacts) as refused:
        async with control() as c:
            await c.start(names.campaign, "inbox-1", {"text": "hi"}, chunks, page_size=20)

    # header is line 1, so row i is on line i + 2
    assert refused.value.problems == [
        f"line {CHUNK + 9}: duplicate contact_id c-00000 (first on an earlier line)"
    ]
    queued = await _published_ids(channel, make_settings().pages_queue)
    assert sorted(queued) == [f"c-{i:05d}" for i in range(CHUNK)]
    stored = await pool.fetchval(
        "SELECT count(*) FROM contacts WHERE campaign_id = $1", names.campaign
    )
    assert stored == CHUNK


async def test_a_campaign_started_in_chunks_completes_only_once_all_chunks_are_stored(
    control: Opener, pool: asyncpg.Pool, names: Names
) -> None:
    async with control() as c:
        await c.start(
            names.campaign, "inbox-1", {"text": "hi"}, read_chunks(_csv(CHUNK), CHUNK), page_size=20
        )
    await pool.execute("UPDATE contacts SET status = 'sent' WHERE campaign_id = $1", names.campaign)
    # what a consumer that finished the first pages does while the start still runs
    await pool.execute(
        "UPDATE campaigns SET loading_until = now() + interval '1 minute' WHERE campaign_id = $1",
        names.campaign,
    )
    assert await pool.fetch(COMPLETE_SQL, [names.campaign]) == []

    async with control() as c:
        again = await c.start(
            names.campaign, "inbox-1", {"text": "hi"}, read_chunks(_csv(CHUNK), CHUNK), page_size=20
        )

    assert again.contacts == 0
    assert await OperatorLedger(pool).campaign_status(names.campaign) == "completed"
