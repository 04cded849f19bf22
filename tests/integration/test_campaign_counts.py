"""Kept per-campaign counts (migration 005) match a recount after any mix of ledger writes."""

from __future__ import annotations

import contextlib
import random
import uuid

import asyncpg
import pytest

from sender.adapters.ledger import Ledger
from sender.adapters.ledger_purge import purge_campaign
from sender.adapters.migrate import available_migrations, migrate
from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.postgres import connect_pool
from sender.core.page import Page
from sender.core.ports import ContactOutcome
from tests.integration.conftest import Names
from tests.integration.support import DATABASE_URL, make_page

OWNERS = ("pod-a", "pod-b")


def _page(campaign_id: str, rng: random.Random) -> Page:
    """A page over a random window of 60 contact ids: redeliveries overlap earlier pages."""
    start = rng.randrange(0, 140)
    page = make_page(campaign_id, 60, page=start)
    for i, contact in enumerate(page["contacts"]):
        contact["contact_id"] = f"c-{start + i:04d}"
    return Page.model_validate(page)


def _outcome(campaign_id: str, contact_id: str, rng: random.Random) -> ContactOutcome:
    status = rng.choice(["sent", "sent", "failed", "pending"])
    reason = "http_4xx: 400" if status == "failed" else None
    return ContactOutcome(campaign_id, contact_id, status, attempts=1, reason=reason)


class PurgeKilled(Exception):
    """Stands for a purge killed between two batches."""


def _kill(_: int) -> None:
    raise PurgeKilled


async def _purge(pool: asyncpg.Pool, campaign_id: str, *, cut_short: bool) -> None:
    """Purge, or stop after the first batch as a killed purge would."""
    if not cut_short:
        await purge_campaign(pool, campaign_id, batch=50)
        return
    with contextlib.suppress(PurgeKilled):
        await purge_campaign(pool, campaign_id, on_batch=_kill, batch=7)


async def _recount_matches(ops: OperatorLedger, pool: asyncpg.Pool, campaign_id: str) -> None:
    assert await ops.count_drift(campaign_id) == []
    summary = await ops.summary(campaign_id)
    if summary is None:
        return
    actual = await pool.fetchval(
        "SELECT count(*) FROM contacts WHERE campaign_id = $1", campaign_id
    )
    assert summary.total == actual


async def test_counts_never_drift_under_redeliveries_retries_resets_and_purges(
    pool: asyncpg.Pool, names: Names
) -> None:
    rng = random.Random(15)
    ledger, ops = Ledger(pool), OperatorLedger(pool)
    campaigns = [f"{names.campaign}-{i}" for i in range(3)]
    held: dict[str, list[tuple[str, str]]] = {owner: [] for owner in OWNERS}
    for _ in range(160):
        campaign = rng.choice(campaigns)
        action = rng.random()
        if action < 0.35:  # a page, or its redelivery, arrives at a pod
            owner = rng.choice(OWNERS)
            # lease 0 on some pages: their claims lapse at once and another pod retakes them
            lease = rng.choice([0.0, 60.0])
            admission = await ledger.admit(_page(campaign, rng), owner, lease)
            held[owner] += [(campaign, c) for c in admission.claimed]
        elif action < 0.7:  # a pod writes a batch (some leases were taken over meanwhile)
            owner = rng.choice(OWNERS)
            batch, held[owner] = held[owner][:40], held[owner][40:]
            if batch:
                await ledger.record([_outcome(k, c, rng) for k, c in batch], owner)
        elif action < 0.8:
            await ops.reset_failed(campaign, "")
        elif action < 0.88:  # retry-failed of one reason only
            await ops.reset_failed(campaign, "http_4xx")
        elif action < 0.94 and await ops.campaign_status(campaign) is not None:
            await ops.transition(campaign, "stopped", frozenset({"running", "paused"}))
            await _purge(pool, campaign, cut_short=rng.random() < 0.5)
            held = {o: [(k, c) for k, c in h if k != campaign] for o, h in held.items()}
        else:
            owner = rng.choice(OWNERS)
            campaigns_held = [k for k, _ in held[owner]]
            contacts_held = [c for _, c in held[owner]]
            await ledger.renew_leases(owner, 60.0, campaigns_held, contacts_held)
        await _recount_matches(ops, pool, campaign)
    for campaign in campaigns:
        await _recount_matches(ops, pool, campaign)


async def test_a_purge_removes_every_row_of_the_campaign_and_its_counts(
    pool: asyncpg.Pool, names: Names
) -> None:
    ledger, ops = Ledger(pool), OperatorLedger(pool)
    page = Page.model_validate(make_page(names.campaign, 95))
    await ledger.admit(page, "pod-a", 60.0)
    await ops.transition(names.campaign, "stopped", frozenset({"running"}))
    batches: list[int] = []

    deleted = await purge_campaign(pool, names.campaign, on_batch=batches.append, batch=40)

    assert deleted == 95
    assert batches == [40, 40, 15]
    for table in ("contacts", "campaign_counts", "campaigns"):
        left = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE campaign_id = $1",
            names.campaign,
        )
        assert left == 0, table
    assert await ops.summary(names.campaign) is None


async def test_the_migration_backfills_counts_of_campaigns_stored_before_it() -> None:
    database = f"counts_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        url = DATABASE_URL.rsplit("/", 1)[0] + f"/{database}"
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in available_migrations():
                if m.version < 5:
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations VALUES ($1, $2)", m.version, m.name
                    )
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, inbox_id, message) VALUES"
                " ('old-1', 'i', '{}'), ('old-2', 'i', '{}')"
            )
            await conn.execute(
                "INSERT INTO contacts (campaign_id, contact_id, to_address, status)"
                " SELECT 'old-' || (1 + g % 2), 'c' || g, '+1',"
                " (ARRAY['pending','sending','sent','failed'])[1 + g % 4]"
                " FROM generate_series(1, 1001) AS g"
            )

            assert await migrate(conn) == [
                m.version for m in available_migrations() if m.version >= 5
            ]
        finally:
            await conn.close()
        pool = await connect_pool(url, max_size=1)
        try:
            ops = OperatorLedger(pool)
            assert await ops.count_drift() == []
            one, two = await ops.summary("old-1"), await ops.summary("old-2")
            assert one is not None
            assert two is not None
            assert (one.total, two.total) == (500, 501)
            assert one.counts == {"pending": 250, "sending": 0, "sent": 250, "failed": 0}
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()


async def test_deleting_a_campaign_deletes_its_contacts_and_counts(
    pool: asyncpg.Pool, names: Names
) -> None:
    await Ledger(pool).admit(Page.model_validate(make_page(names.campaign, 10)), "pod-a", 60.0)

    await pool.execute("DELETE FROM campaigns WHERE campaign_id = $1", names.campaign)

    for table in ("contacts", "campaign_counts"):
        left = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE campaign_id = $1", names.campaign
        )
        assert left == 0, table


async def test_a_contact_of_an_unknown_campaign_is_refused(
    pool: asyncpg.Pool, names: Names
) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(
            "INSERT INTO contacts (campaign_id, contact_id, to_address) VALUES ($1, 'c', '+1')",
            names.campaign,
        )
