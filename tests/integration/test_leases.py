"""Leases (DESIGN §5): renewed only for contacts in flight; a lapsed one is sent again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest

from sender.adapters.ledger import Ledger
from sender.settings import Settings
from sender.testing import FakeInbox
from tests.integration.conftest import Names
from tests.integration.support import contact_rows, run_cli, running_consumer, settings_env

MakeSettings = Callable[..., Settings]


async def _campaign(pool: asyncpg.Pool, campaign_id: str, *, started_by_cli: bool = True) -> None:
    await pool.execute(
        "INSERT INTO campaigns (campaign_id, inbox_id, message, started_by_cli)"
        " VALUES ($1, 'inbox-1', '{\"text\": \"hi\"}', $2)",
        campaign_id,
        started_by_cli,
    )


async def _contact(
    pool: asyncpg.Pool,
    campaign_id: str,
    contact_id: str,
    status: str,
    *,
    owner: str | None = None,
    lease_s: float | None = None,
    reason: str | None = None,
) -> None:
    await pool.execute(
        "INSERT INTO contacts (campaign_id, contact_id, to_address, status, lease_owner,"
        " lease_until, reason) VALUES ($1, $2, '+5511', $3, $4,"
        " CASE WHEN $5::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $5) END, $6)",
        campaign_id,
        contact_id,
        status,
        owner,
        lease_s,
        reason,
    )


async def _wait_sent(pool: asyncpg.Pool, campaign_id: str, ids: set[str]) -> None:
    async with asyncio.timeout(20):
        while True:
            rows = await contact_rows(pool, campaign_id)
            if all(rows[i]["status"] == "sent" for i in ids):
                return
            await asyncio.sleep(0.05)  # another process writes the ledger: poll it


@pytest.mark.usefixtures("channel")
async def test_an_orphaned_sending_row_with_an_expired_lease_is_republished_by_resume_and_sent(
    make_settings: MakeSettings, inbox: FakeInbox, pool: asyncpg.Pool, names: Names
) -> None:
    # What a dead-lettered page leaves: claimed by a pod that is gone, lease lapsed.
    await _campaign(pool, names.campaign)
    await _contact(pool, names.campaign, "orphan", "sending", owner="gone:1:x", lease_s=-5)
    await _contact(pool, names.campaign, "held", "sending", owner="alive:1:x", lease_s=600)
    settings = make_settings()
    async with running_consumer(settings):
        result = await asyncio.to_thread(
            run_cli, "campaign", "resume", names.campaign, env=settings_env(settings)
        )
        assert result.returncode == 0, result.stderr
        await _wait_sent(pool, names.campaign, {"orphan"})

    rows = await contact_rows(pool, names.campaign)
    assert rows["orphan"]["lease_owner"] is None
    assert [r.contact_id for r in inbox.requests] == ["orphan"]  # a live lease is left alone
    assert rows["held"]["status"] == "sending"


@pytest.mark.usefixtures("channel")
async def test_retry_failed_also_sends_a_sending_row_whose_lease_lapsed(
    make_settings: MakeSettings, inbox: FakeInbox, pool: asyncpg.Pool, names: Names
) -> None:
    await _campaign(pool, names.campaign)
    await _contact(pool, names.campaign, "failed", "failed", reason="http_4xx: 400")
    await _contact(pool, names.campaign, "orphan", "sending", owner="gone:1:x", lease_s=-5)
    settings = make_settings()
    async with running_consumer(settings):
        result = await asyncio.to_thread(
            run_cli, "campaign", "retry-failed", names.campaign, env=settings_env(settings)
        )
        assert result.returncode == 0, result.stderr
        await _wait_sent(pool, names.campaign, {"failed", "orphan"})

    assert sorted(r.contact_id for r in inbox.requests) == ["failed", "orphan"]


async def test_renew_leases_extends_only_the_contacts_named(
    pool: asyncpg.Pool, names: Names
) -> None:
    await _campaign(pool, names.campaign)
    for contact_id in ("live", "dead"):
        await _contact(pool, names.campaign, contact_id, "sending", owner="me", lease_s=1)

    renewed = await Ledger(pool).renew_leases("me", 600, [names.campaign], ["live"])

    rows = await contact_rows(pool, names.campaign)
    assert renewed == 1
    assert (rows["live"]["lease_until"] - rows["dead"]["lease_until"]).total_seconds() > 500


@pytest.mark.usefixtures("channel")
async def test_the_lease_keeper_lets_a_lease_lapse_whose_contact_is_not_in_flight(
    make_settings: MakeSettings, pool: asyncpg.Pool, names: Names
) -> None:
    # Keeper every second; the row is this process's own, but no task holds it any more.
    settings = make_settings(claim_lease_ms=3000)
    await _campaign(pool, names.campaign, started_by_cli=False)
    async with running_consumer(settings) as app:
        await _contact(pool, names.campaign, "c-dead", "sending", owner=app.owner, lease_s=1.5)
        deadline = time.monotonic() + 6
        lapsed = False
        while not lapsed and time.monotonic() < deadline:
            await asyncio.sleep(0.25)  # the keeper runs on a timer: nothing to await
            lapsed = bool(
                await pool.fetchval(
                    "SELECT lease_until < now() FROM contacts"
                    " WHERE campaign_id = $1 AND contact_id = 'c-dead'",
                    names.campaign,
                )
            )
        assert app.supervisor.healthy

    assert lapsed
