"""Auto-pause (DESIGN §11) with a `sender run` process, the real services and the fake
inbox: a campaign whose every contact gets a 400 pauses itself early, with a reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from sender.testing import Step
from tests.integration.conftest import World
from tests.integration.support import (
    make_page,
    run_cli,
    settings_env,
    start_consumer_process,
)
from tests.integration.test_deferred_retries import _metric

CONTACTS = 2000


async def _status(env: dict[str, str], campaign_id: str) -> dict[str, object]:
    result = await asyncio.to_thread(run_cli, "campaign", "status", campaign_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    status: dict[str, object] = orjson.loads(result.stdout)
    return status


async def _ledger_until(world: World, sql: str) -> None:
    """Poll the ledger (another process writes it) until `sql`, about this campaign, is true."""
    query = f"{sql} {'AND' if 'WHERE' in sql else 'WHERE'} campaign_id = $1"
    async with asyncio.timeout(30):
        while True:
            if await world.pool.fetchval(query, world.names.campaign):
                return
            await asyncio.sleep(0.05)


async def _until(
    env: dict[str, str], campaign_id: str, done: Callable[[dict[str, int]], bool]
) -> dict[str, object]:
    """Poll `status --json` (the consumer is another process) until `done(counts)`."""
    async with asyncio.timeout(60):
        while True:
            status = await _status(env, campaign_id)
            if done(status["counts"]):  # type: ignore[arg-type]
                return status
            await asyncio.sleep(0.2)


async def _cli(env: dict[str, str], *args: str) -> None:
    result = await asyncio.to_thread(run_cli, "campaign", *args, env=env)
    assert result.returncode == 0, result.stderr


async def test_a_campaign_whose_every_contact_gets_400_pauses_itself_and_resumes_after_the_fix(
    world: World, tmp_path: Path
) -> None:
    campaign = world.names.campaign
    world.inbox.set_inbox_default("inbox-1", Step(400))
    settings = world.settings(inbox_rate_per_sec=200, inbox_burst=20)
    env = settings_env(settings)
    consumer = await start_consumer_process(settings, str(tmp_path / "c.log"))
    try:
        for page in range(2):
            await world.publish(make_page(campaign, CONTACTS // 2, page=page, prefix=f"c{page}"))
        await _ledger_until(world, "SELECT status = 'paused' FROM campaigns")
        paused_after = time.monotonic() - world.inbox.first_at
        # The contacts in flight at the pause settle (failed, or released pending).
        await _ledger_until(world, "SELECT count(*) = 0 FROM contacts WHERE status = 'sending'")
        paused = await _status(env, campaign)
        pauses = await _metric(consumer, "sender_campaign_auto_pauses_total")

        human = await asyncio.to_thread(run_cli, "campaign", "status", campaign, env=env)

        world.inbox.set_inbox_default("inbox-1", Step(200))
        await _cli(env, "resume", campaign)
        resumed = await _until(env, campaign, lambda c: c["sent"] + c["failed"] == CONTACTS)
        await _cli(env, "retry-failed", campaign)
        retried = await _until(env, campaign, lambda c: c["sent"] == CONTACTS)
    finally:
        consumer.stop()

    failed_at_pause = paused["counts"]["failed"]  # type: ignore[index]
    print(
        f"auto-paused {paused_after:.2f} s after the first POST, {failed_at_pause} of"
        f" {CONTACTS} failed; reason: {paused['status_reason']}"
    )
    assert paused["status"] == "paused"
    reason = str(paused["status_reason"])
    assert reason.startswith("auto-paused: ")
    assert reason.endswith("contacts failed (http_4xx: 400)")
    assert failed_at_pause <= CONTACTS * 0.2
    assert paused["counts"]["sent"] == 0  # type: ignore[index]
    assert pauses == 1
    assert resumed["status_reason"] is None
    assert resumed["status"] == "running"
    assert resumed["counts"]["failed"] == failed_at_pause  # type: ignore[index]
    assert "reason: auto-paused: " in human.stdout
    assert retried["counts"]["failed"] == 0  # type: ignore[index]
    assert len(world.inbox.keys()) == CONTACTS
