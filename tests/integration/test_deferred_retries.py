"""Deferred retries (DESIGN §4, §11) with `sender run` processes, the real services and the
fake inbox: a used-up round waits in the ledger and any consumer runs the next one."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from sender.settings import Settings
from sender.testing import Step
from tests.integration.conftest import World
from tests.integration.support import (
    ConsumerProcess,
    contact_rows,
    make_page,
    start_consumer_process,
    wait_for_final,
)

E503 = Step(503)


def _deferring(world: World, schedule: str = "2s,4s") -> Settings:
    return world.settings(
        dispatch_deferred_schedule=schedule, dispatch_retry_count=3, dispatch_backoff_base_ms=50
    )


def _gaps(world: World) -> list[float]:
    times = [r.received_at for r in world.inbox.requests_for("c-0000")]
    return [b - a for a, b in itertools.pairwise(times)]


async def _metric(consumer: ConsumerProcess, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{consumer.metrics_port}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def _wait_deferred(pool: asyncpg.Pool, campaign_id: str) -> asyncpg.Record:
    """Poll the ledger (another process writes it) until the contact waits for a round."""
    async with asyncio.timeout(20):
        while True:
            row = (await contact_rows(pool, campaign_id)).get("c-0000")
            if row is not None and row["next_attempt_at"] is not None:
                return row
            await asyncio.sleep(0.05)


async def test_a_second_round_sends_it_on_attempt_seven_after_about_two_seconds(
    world: World, tmp_path: Path
) -> None:
    world.inbox.script("c-0000", *[E503] * 6, Step(200))
    consumer = await start_consumer_process(_deferring(world), str(tmp_path / "c.log"))
    try:
        await world.publish(make_page(world.names.campaign, 1))
        deferred = await _wait_deferred(world.pool, world.names.campaign)
        rows = await wait_for_final(world.pool, world.names.campaign, 1)
        deferrals = await _metric(consumer, "sender_contacts_total", outcome="deferred")
        sent = await _metric(consumer, "sender_contacts_total", outcome="sent")
    finally:
        consumer.stop()
    gaps = _gaps(world)
    print(f"gaps between attempts: {[round(g, 2) for g in gaps]}")
    assert (deferred["status"], deferred["attempts"], deferred["deferred_rounds"]) == (
        "pending",
        4,
        1,
    )
    row = rows["c-0000"]
    assert (row["status"], row["attempts"], row["reason"]) == ("sent", 7, None)
    assert len(gaps) == 6
    assert all(gap < 1.0 for gap in gaps[:3] + gaps[4:])  # short retries within a round
    assert 1.9 <= gaps[3] <= 3.5  # the 2 s deferral, plus at most a re-drive poll
    assert deferrals == 1
    assert sent == 1


async def test_503_forever_fails_after_every_round_with_all_twelve_codes(
    world: World, tmp_path: Path
) -> None:
    world.inbox.set_inbox_default("inbox-1", E503)
    consumer = await start_consumer_process(_deferring(world), str(tmp_path / "c.log"))
    try:
        await world.publish(make_page(world.names.campaign, 1))
        rows = await wait_for_final(world.pool, world.names.campaign, 1, timeout=40)
        deferrals = await _metric(consumer, "sender_contacts_total", outcome="deferred")
    finally:
        consumer.stop()
    gaps = _gaps(world)
    print(f"gaps between rounds: {gaps[3]:.2f} s, {gaps[7]:.2f} s")
    row = rows["c-0000"]
    assert row["status"] == "failed"
    assert row["attempts"] == 12
    assert row["reason"] == "dispatch_exhausted_retries: " + json.dumps(
        ["503"] * 12, separators=(",", ":")
    )
    assert len(gaps) == 11
    assert 1.9 <= gaps[3] <= 3.5
    assert 3.9 <= gaps[7] <= 5.5
    assert deferrals == 2


async def test_a_deferred_contact_survives_its_consumer_being_killed(
    world: World, tmp_path: Path
) -> None:
    world.inbox.script("c-0000", *[E503] * 4, Step(200))
    settings = _deferring(world, "3s")
    first = await start_consumer_process(settings, str(tmp_path / "first.log"))
    try:
        await world.publish(make_page(world.names.campaign, 1))
        await _wait_deferred(world.pool, world.names.campaign)
        deferred_at = time.monotonic()
        first.signal(signal.SIGKILL)
        await first.wait_exit(10)
    finally:
        first.stop()
    second = await start_consumer_process(settings, str(tmp_path / "second.log"))
    try:
        rows = await wait_for_final(world.pool, world.names.campaign, 1)
    finally:
        second.stop()
    row = rows["c-0000"]
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("sent", 5, None)
    fifth = world.inbox.requests_for("c-0000")[4].received_at
    assert fifth - deferred_at >= 2.5  # not early: only when due
