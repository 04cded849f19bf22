"""Removing finished campaigns from the ledger, in batches that never block live campaigns.

Contacts go in transactions of at most `batch` rows each (walking the primary key, so
every batch is one index range), then the campaign row, whose cascade takes its counts
and whatever a late redelivered page re-inserted meanwhile. Each batch re-checks that
the campaign is still finished, holding its row (FOR SHARE) only for that batch.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from sender.errors import CampaignStateError, UnknownCampaign

FINISHED = ("completed", "stopped")
MAX_BATCH = 10_000

_BATCH_SQL = """
WITH gone AS (
    DELETE FROM contacts AS c
     WHERE c.campaign_id = $1 AND c.contact_id IN (
           SELECT contact_id FROM contacts WHERE campaign_id = $1 AND contact_id > $2
            ORDER BY contact_id LIMIT $3)
    RETURNING c.contact_id
)
SELECT count(*) AS n, max(contact_id) AS last FROM gone
"""

OnBatch = Callable[[int], None]


async def purge_campaign(
    pool: asyncpg.Pool, campaign_id: str, on_batch: OnBatch = lambda _: None, batch: int = MAX_BATCH
) -> int:
    """Delete a completed or stopped campaign and its contacts; return contacts deleted.

    Raises `UnknownCampaign`, or `CampaignStateError` for a campaign that is not finished
    (also when it leaves `completed`/`stopped` while the purge runs: nothing more goes).
    """
    batch = min(batch, MAX_BATCH)
    deleted, after = 0, ""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await _lock_finished(conn, campaign_id)
            row = await conn.fetchrow(_BATCH_SQL, campaign_id, after, batch)
        assert row is not None
        if row["n"] == 0:
            break
        deleted += row["n"]
        after = row["last"]
        on_batch(row["n"])
    async with pool.acquire() as conn, conn.transaction():
        await _lock_finished(conn, campaign_id)
        await conn.execute("DELETE FROM campaigns WHERE campaign_id = $1", campaign_id)
    return deleted


async def finished_before(pool: asyncpg.Pool, days: float) -> list[tuple[str, int]]:
    """Finished campaigns whose completion or stop is older than `days`, oldest first,
    with their contact counts."""
    rows = await pool.fetch(
        "SELECT k.campaign_id, coalesce(sum(n.n), 0)::bigint AS total FROM campaigns AS k"
        " LEFT JOIN campaign_counts AS n USING (campaign_id)"
        " WHERE k.status = ANY($1::text[])"
        " AND k.finished_at < now() - make_interval(secs => $2)"
        " GROUP BY k.campaign_id, k.finished_at ORDER BY k.finished_at, k.campaign_id",
        list(FINISHED),
        days * 86400,
    )
    return [(row["campaign_id"], row["total"]) for row in rows]


async def _lock_finished(
    conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], campaign_id: str
) -> None:
    status = await conn.fetchval(
        "SELECT status FROM campaigns WHERE campaign_id = $1 FOR SHARE", campaign_id
    )
    if status is None:
        raise UnknownCampaign(campaign_id)
    if status not in FINISHED:
        raise CampaignStateError(
            campaign_id, status, "only completed or stopped campaigns can be purged"
        )
