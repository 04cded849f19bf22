"""Pause, stop, resume and retry through the real ledger, Redis and broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

from sender.runtime.bootstrap import operator_services
from sender.runtime.campaign_control import CampaignControl
from sender.settings import Settings
from sender.testing import Step
from tests.benchmarks.bench_pause import measure_pause_latency
from tests.integration.conftest import World
from tests.integration.support import (
    contact_rows,
    make_page,
    publish,
    run_cli,
    running_consumer,
    settings_env,
    start_consumer_process,
    wait_for_final,
)

MakeSettings = Callable[..., Settings]


@pytest.fixture
async def control(
    make_settings: MakeSettings, pool: asyncpg.Pool
) -> AsyncIterator[CampaignControl]:
    settings = make_settings()
    async with operator_services(settings, pool=pool) as services:
        yield services.control


async def _queue_depth(channel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count)


async def test_stop_during_a_long_backoff_leaves_the_contact_pending_and_acks_the_page(
    world: World,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.inbox.script("c-0000", Step(503), Step(200))
    settings = world.settings(dispatch_backoff_base_ms=30_000, dispatch_backoff_cap_ms=30_000)
    caplog.set_level(logging.INFO, logger="sender.core.contact_sender")
    async with running_consumer(settings) as app:
        await app.listening.wait()
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 1))
        )
        await world.inbox.wait_for_requests(1)
        result = await asyncio.to_thread(
            run_cli, "campaign", "stop", world.names.campaign, env=settings_env(settings)
        )
        assert result.returncode == 0, result.stderr
        async with asyncio.timeout(2):  # far below the 30 s backoff
            await app.wait_settled(1)
        assert app.metrics.value("sender_contacts_total", outcome="aborted") == 1
        assert app.metrics.value("sender_contacts_total", outcome="failed") == 0

    assert len(world.inbox.requests_for("c-0000")) == 1
    row = (await contact_rows(world.pool, world.names.campaign))["c-0000"]
    assert (row["status"], row["attempts"], row["reason"]) == ("pending", 1, None)
    assert await _queue_depth(world.channel, world.names.queue) == 0
    assert "aborted: campaign stopped during retry" in caplog.messages


async def test_pause_latency_with_two_consumer_processes_is_under_250_ms_at_p99(
    world: World,
    control: CampaignControl,
    tmp_path: Path,
) -> None:
    world.inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.02))
    settings = world.settings(dispatch_concurrency=40, abort_poll_ms=1000, status_cache_ttl_ms=5000)
    consumers = [
        await start_consumer_process(settings, str(tmp_path / f"c{i}.log")) for i in range(2)
    ]
    try:
        latency = await measure_pause_latency(
            control, world.channel, world.names.queue, world.inbox, world.names.campaign, trials=20
        )
    finally:
        for consumer in consumers:
            consumer.stop()
    print(f"pause latency p50={latency.percentile(0.5):.3f}s p99={latency.percentile(0.99):.3f}s")
    assert latency.percentile(0.99) < 0.25


async def test_pause_then_resume_sends_every_contact_exactly_once(
    world: World,
    control: CampaignControl,
) -> None:
    world.inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.01))
    settings = world.settings(dispatch_concurrency=20)
    async with running_consumer(settings) as app:
        await app.listening.wait()
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 400))
        )
        await world.inbox.wait_for_requests(50)
        await control.pause(world.names.campaign)
        await app.wait_settled(1)
        paused_rows = await contact_rows(world.pool, world.names.campaign)
        await control.resume(world.names.campaign)
        rows = await wait_for_final(world.pool, world.names.campaign, 400)

    assert any(row["status"] == "pending" for row in paused_rows.values())
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(world.inbox.keys()) == 400
    assert set(world.inbox.keys().values()) == {1}


async def test_stop_is_final_resume_is_refused_and_contacts_stay_pending(world: World) -> None:
    world.inbox.set_inbox_default("inbox-1", Step(200, delay_s=0.02))
    settings = world.settings(dispatch_concurrency=5)
    env = settings_env(settings)
    async with running_consumer(settings) as app:
        await app.listening.wait()
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 200))
        )
        await world.inbox.wait_for_requests(10)
        assert run_cli("campaign", "stop", world.names.campaign, env=env).returncode == 0
        await app.wait_settled(1)
        sent_before = len(world.inbox.requests)
        refused = await asyncio.to_thread(
            run_cli, "campaign", "resume", world.names.campaign, env=env
        )
        paused = await asyncio.to_thread(
            run_cli, "campaign", "pause", world.names.campaign, env=env
        )

    assert refused.returncode == 1
    assert refused.stderr.strip() == f"campaign {world.names.campaign} is stopped: stop is final"
    assert paused.returncode == 1
    rows = await contact_rows(world.pool, world.names.campaign)
    assert "pending" in {row["status"] for row in rows.values()}
    assert "failed" not in {row["status"] for row in rows.values()}
    assert len(world.inbox.requests) == sent_before


async def test_a_page_for_a_paused_campaign_is_acked_without_dispatching(
    world: World,
    control: CampaignControl,
) -> None:
    settings = world.settings()
    async with running_consumer(settings) as app:
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 1))
        )
        await app.wait_settled(1)
        await control.pause(world.names.campaign)
        later = make_page(world.names.campaign, 6)
        later["contacts"] = later["contacts"][1:]
        await world.publish(later)
        await app.wait_settled(2)

    assert len(world.inbox.requests) == 1
    rows = await contact_rows(world.pool, world.names.campaign)
    assert sorted(r["status"] for r in rows.values()) == ["pending"] * 5 + ["sent"]
    assert await _queue_depth(world.channel, world.names.queue) == 0


async def test_retry_failed_with_a_reason_prefix_resends_only_those_contacts(world: World) -> None:
    world.inbox.script("c-0001", Step(400), Step(200))
    world.inbox.script("c-0002", Step(404), Step(200))
    world.inbox.script("c-0003", Step(503), Step(200))
    settings = world.settings(dispatch_retry_count=0)
    env = settings_env(settings)
    async with running_consumer(settings) as app:
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 5))
        )
        await app.wait_settled(1)
        result = await asyncio.to_thread(
            run_cli,
            "campaign",
            "retry-failed",
            world.names.campaign,
            "--reason",
            "http_4xx",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "2 contacts back to pending" in result.stdout
        await app.wait_settled(2)

    rows = await contact_rows(world.pool, world.names.campaign)
    assert rows["c-0001"]["status"] == rows["c-0002"]["status"] == "sent"
    assert rows["c-0003"]["status"] == "failed"
    assert len(world.inbox.requests_for("c-0001")) == 2
    assert len(world.inbox.requests_for("c-0003")) == 1
    assert len(world.inbox.requests_for("c-0000")) == 1
