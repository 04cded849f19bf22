"""The re-drive's ledger: claim due deferred contacts, clear them once their pages are out.

    BEGIN; SELECT due ... FOR UPDATE SKIP LOCKED   (other pods skip these rows)
           publish their pages with confirms       (the caller, inside the block)
           UPDATE ... SET next_attempt_at = NULL; COMMIT

A crash before the commit rolls the claim back: the contacts stay due and are re-driven
later (at worst a page twice, which the claim deduplicates), never lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from sender.core.page import Contact

# Only running campaigns: a deferred contact of a paused or stopped campaign waits (its
# `next_attempt_at` kept) until `resume`, and is re-driven then.
_DUE_SQL = """
SELECT c.campaign_id, c.contact_id, c.to_address, c.variables, k.inbox_id, k.message
  FROM contacts AS c JOIN campaigns AS k USING (campaign_id)
 WHERE c.status = 'pending' AND c.next_attempt_at IS NOT NULL AND c.next_attempt_at <= now()
   AND k.status = 'running'
 ORDER BY c.next_attempt_at
 LIMIT $1
   FOR UPDATE OF c SKIP LOCKED
"""

_CLEAR_SQL = """
UPDATE contacts AS c SET next_attempt_at = NULL, updated_at = now()
  FROM unnest($1::text[], $2::text[]) AS i(campaign_id, contact_id)
 WHERE c.campaign_id = i.campaign_id AND c.contact_id = i.contact_id
"""


@dataclass(frozen=True, slots=True)
class DueCampaign:
    """One campaign's due contacts, with what its pages need."""

    campaign_id: str
    inbox_id: str
    message: dict[str, Any]
    contacts: list[Contact]


class DeferredContacts:
    """Due deferred contacts, claimed across pods without waiting on each other."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def claim_due(self, limit: int) -> AsyncIterator[list[DueCampaign]]:
        """Up to `limit` due contacts grouped by campaign, locked for the block; they are
        cleared (no longer deferred) only if the block ends without raising."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_DUE_SQL, limit)
            yield _by_campaign(rows)
            if rows:
                await conn.execute(
                    _CLEAR_SQL,
                    [row["campaign_id"] for row in rows],
                    [row["contact_id"] for row in rows],
                )


def _by_campaign(rows: list[asyncpg.Record]) -> list[DueCampaign]:
    found: dict[str, DueCampaign] = {}
    for row in rows:
        campaign = found.get(row["campaign_id"])
        if campaign is None:
            campaign = found[row["campaign_id"]] = DueCampaign(
                row["campaign_id"], row["inbox_id"], row["message"], []
            )
        campaign.contacts.append(
            Contact(contact_id=row["contact_id"], to=row["to_address"], variables=row["variables"])
        )
    return list(found.values())
