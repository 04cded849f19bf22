"""`sender campaign purge`, `sender db purge --older-than` and `sender db check` as run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from sender.adapters.ledger import Ledger
from sender.adapters.operator_ledger import OperatorLedger
from sender.core.page import Page
from sender.settings import Settings
from tests.integration.conftest import Names
from tests.integration.support import make_page, run_cli, settings_env

MakeSettings = Callable[..., Settings]


async def _cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(run_cli, *args, env=settings_env(settings))


async def _campaign(pool: asyncpg.Pool, campaign_id: str, contacts: int) -> None:
    await Ledger(pool).admit(Page.model_validate(make_page(campaign_id, contacts)), "pod", 60.0)


async def test_purge_refuses_a_running_campaign_and_keeps_its_rows(
    make_settings: MakeSettings, pool: asyncpg.Pool, names: Names
) -> None:
    await _campaign(pool, names.campaign, 30)

    result = await _cli(make_settings(), "campaign", "purge", names.campaign)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"campaign {names.campaign} is running: only completed or stopped campaigns can be purged"
    )
    summary = await OperatorLedger(pool).summary(names.campaign)
    assert summary is not None
    assert summary.total == 30


async def test_purge_of_a_stopped_campaign_removes_it(
    make_settings: MakeSettings, pool: asyncpg.Pool, names: Names
) -> None:
    await _campaign(pool, names.campaign, 30)
    await OperatorLedger(pool).transition(names.campaign, "stopped", frozenset({"running"}))

    result = await _cli(make_settings(), "campaign", "purge", names.campaign)

    assert result.returncode == 0, result.stderr
    assert f"campaign {names.campaign} purged: 30 contacts deleted" in result.stdout
    again = await _cli(make_settings(), "campaign", "purge", names.campaign)
    assert again.returncode == 1
    assert again.stderr.strip() == f"unknown campaign: {names.campaign}"


async def test_db_purge_takes_only_campaigns_finished_longer_ago_than_asked(
    make_settings: MakeSettings, pool: asyncpg.Pool, names: Names
) -> None:
    old, recent, live = (f"{names.campaign}-{n}" for n in ("old", "recent", "live"))
    for campaign in (old, recent, live):
        await _campaign(pool, campaign, 12)
    for campaign in (old, recent):
        await OperatorLedger(pool).transition(campaign, "stopped", frozenset({"running"}))
    await pool.execute(
        "UPDATE campaigns SET finished_at = now() - interval '3 days' WHERE campaign_id = $1", old
    )
    # a running campaign with an old finished_at can only come from a bug; still never purged
    await pool.execute(
        "UPDATE campaigns SET finished_at = now() - interval '9 days' WHERE campaign_id = $1", live
    )

    result = await _cli(make_settings(), "db", "purge", "--older-than", "2")

    assert result.returncode == 0, result.stderr
    left = await pool.fetch(
        "SELECT campaign_id FROM campaigns WHERE campaign_id LIKE $1", f"{names.campaign}-%"
    )
    assert {row["campaign_id"] for row in left} == {recent, live}
    assert "purged 1 campaign(s), 12 contacts" in result.stdout


async def test_db_check_reports_counts_that_drifted(
    make_settings: MakeSettings, pool: asyncpg.Pool, names: Names
) -> None:
    await _campaign(pool, names.campaign, 5)
    clean = await _cli(make_settings(), "db", "check")
    await pool.execute(
        "UPDATE campaign_counts SET n = n + 1 WHERE campaign_id = $1 AND status = 'sending'",
        names.campaign,
    )

    drifted = await _cli(make_settings(), "db", "check")

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert drifted.returncode == 1
    assert f"campaign {names.campaign} sending: kept 6, counted 5" in drifted.stdout
