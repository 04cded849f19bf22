"""The consumer's lookups stay primary-key probes whatever the planner's statistics say."""

from __future__ import annotations

import asyncpg

from sender.adapters.ledger import _HELD_SQL
from tests.integration.conftest import Names


async def test_the_held_check_probes_the_primary_key_not_the_whole_lease_index(
    pool: asyncpg.Pool, names: Names
) -> None:
    # Many contacts in flight, stored after the last ANALYZE: what a big page run leaves.
    await pool.execute("ANALYZE contacts")
    await pool.execute(
        "INSERT INTO campaigns (campaign_id, inbox_id, message) VALUES ($1, 'i', '{}')",
        names.campaign,
    )
    await pool.execute(
        "INSERT INTO contacts (campaign_id, contact_id, to_address, status, lease_owner,"
        " lease_until) SELECT $1, 'c-' || g, '+1', 'sending', 'pod-a', now() + interval '1 h'"
        " FROM generate_series(1, 20000) AS g",
        names.campaign,
    )
    ids = [f"c-{i}" for i in range(1, 1001)]

    plan = await pool.fetchval(
        "EXPLAIN (FORMAT JSON) " + _HELD_SQL, [names.campaign] * len(ids), ids
    )

    assert "contacts_leased_by" not in plan
