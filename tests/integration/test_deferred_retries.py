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

from sender.adapters.deferred_ledger import DeferredContacts
from sender.adapters.ledger import Ledger
from sender.adapters.operator_ledger import OperatorLedger
from sender.core.page import Page
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


async def _defer(world: World, campaign_id: str, status: str, due_in_s: float) -> None:
    """A campaign of two contacts, both waiting for a deferred round due in `due_in_s`."""
    pool = world.pool
    await pool.execute(
        "INSERT INTO campaigns (campaign_id, inbox_id, message, status) VALUES ($1, 'i', '{}', $2)",
        campaign_id,
        status,
    )
    await pool.execute(
        "INSERT INTO contacts (campaign_id, contact_id, to_address, next_attempt_at,"
        " deferred_rounds) SELECT $1, c, '+1', now() + make_interval(secs => $2), 1"
        " FROM unnest(ARRAY['c-0000', 'c-0001']) AS c",
        campaign_id,
        due_in_s,
    )


async def test_deferred_contacts_of_a_paused_campaign_wait_for_resume(world: World) -> None:
    campaign = world.names.campaign + "-paused"
    await _defer(world, campaign, "paused", -1.0)
    ledger, deferred = OperatorLedger(world.pool), DeferredContacts(world.pool)

    async with deferred.claim_due(10_000) as due:
        assert campaign not in {group.campaign_id for group in due}
    summary = await ledger.summary(campaign)
    assert summary is not None
    assert summary.deferred == 2
    await ledger.transition(campaign, "running", frozenset({"paused"}))
    async with deferred.claim_due(10_000) as due:
        mine = [group for group in due if group.campaign_id == campaign]
    assert [c.contact_id for c in mine[0].contacts] == ["c-0000", "c-0001"]
    summary = await ledger.summary(campaign)
    assert summary is not None
    assert summary.deferred == 0  # re-driven: no longer waiting


async def test_resume_and_redelivered_pages_never_send_a_round_early(world: World) -> None:
    campaign = world.names.campaign + "-later"
    await _defer(world, campaign, "running", 3600.0)
    assert await OperatorLedger(world.pool).pending_contacts(campaign) == []
    page = Page.model_validate(make_page(campaign, 2, inbox_id="i"))
    admission = await Ledger(world.pool).admit(page, "owner", 60.0)
    assert (admission.campaign_status, list(admission.claimed)) == ("running", [])
    assert list(admission.held_elsewhere) == []  # acked away; the re-drive sends them
