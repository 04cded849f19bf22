"""Consumer processes killed or stopped mid-page: nothing lost, duplicates bounded."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson

from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.integration.conftest import Names
from tests.integration.support import (
    contact_rows,
    make_page,
    publish,
    running_consumer,
    start_consumer_process,
    wait_for_final,
)

MakeSettings = Callable[..., Settings]


async def test_sigkill_mid_page_loses_nothing_and_resends_only_what_was_in_flight(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.05))
    settings = make_settings(
        dispatch_concurrency=10, claim_lease_ms=1500, dispatch_timeout_ms=1500, outcome_flush_ms=20
    )
    first = await start_consumer_process(settings, str(tmp_path / "first.log"))
    try:
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 300)))
        await inbox.wait_for_requests(100, timeout=30)
        first.signal(signal.SIGKILL)
        await first.wait_exit(10)
    finally:
        first.stop()
    requested_before_kill = set(inbox.keys())
    rows = await contact_rows(pool, names.campaign)
    committed_sent = {f"{names.campaign}:{cid}" for cid, r in rows.items() if r["status"] == "sent"}
    in_flight_at_kill = requested_before_kill - committed_sent

    second = await start_consumer_process(settings, str(tmp_path / "second.log"))
    try:
        rows = await wait_for_final(pool, names.campaign, 300, timeout=60)
    finally:
        second.stop()

    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(inbox.keys()) == 300
    duplicates = {key for key, posts in inbox.keys().items() if posts > 1}
    assert duplicates <= in_flight_at_kill
    assert max(inbox.keys().values()) == (2 if duplicates else 1)
    # In flight = attempts under way (10) plus answers not yet committed: at 200 answers/s,
    # one 20 ms flush window and a batch write under a loaded CPU add a few dozen at most.
    assert len(in_flight_at_kill) <= 5 * settings.dispatch_concurrency


async def test_sigterm_drains_within_the_grace_and_leaves_every_contact_final_or_pending(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    channel,
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.2))
    for i in range(0, 200, 20):  # some contacts sit in a long backoff when SIGTERM comes
        inbox.script(f"c-{i:04d}", Step(503), Step(200))
    settings = make_settings(
        dispatch_concurrency=20, dispatch_backoff_base_ms=10000, shutdown_grace_s=5
    )
    consumer = await start_consumer_process(settings, str(tmp_path / "consumer.log"))
    try:
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 200)))
        await inbox.wait_for_requests(60, timeout=30)
        signalled = time.monotonic()
        consumer.signal(signal.SIGTERM)
        exit_code = await consumer.wait_exit(settings.shutdown_grace_s + 5)
        drain_s = time.monotonic() - signalled
    finally:
        consumer.stop()

    assert exit_code == 0
    assert drain_s < settings.shutdown_grace_s + 2
    rows = await contact_rows(pool, names.campaign)
    assert len(rows) == 200
    assert {row["status"] for row in rows.values()} <= {"sent", "failed", "pending"}
    assert any(row["status"] == "pending" for row in rows.values())

    # The rest went back to the queue as a continuation page: a new consumer finishes it.
    async with running_consumer(make_settings(dispatch_backoff_base_ms=50)):
        rows = await wait_for_final(pool, names.campaign, 200, timeout=60)
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(inbox.keys()) == 200
