"""The consumer's ledger (asyncpg): page admission, contact claims with leases, outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from sender.adapters.postgres import raises_unavailable, refused_as_page_error
from sender.core.page import Contact, Page
from sender.core.policy import FIRST_ROUND, EarlierRounds
from sender.core.ports import Admission, CampaignStatus, ContactOutcome

_INSERT_CONTACTS_SQL = """
INSERT INTO contacts (campaign_id, contact_id, to_address, variables)
SELECT $1, c, t, v FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS u(c, t, v)
    ON CONFLICT (campaign_id, contact_id) DO NOTHING
"""


async def store_contacts(
    conn: PoolConnectionProxy[asyncpg.Record], campaign_id: str, contacts: Sequence[Contact]
) -> int:
    """Insert contacts idempotently (a redelivered or republished contact is never duplicated
    nor reset); return how many were new."""
    result = await conn.execute(
        _INSERT_CONTACTS_SQL,
        campaign_id,
        [contact.contact_id for contact in contacts],
        [contact.to for contact in contacts],
        [contact.variables for contact in contacts],
    )
    return int(result.split()[-1])


# A campaign run by `campaign start` is completed once nothing is pending or in flight,
# and no start is still storing its contacts (`loading_until`, a lease).
COMPLETE_SQL = """
UPDATE campaigns AS k
   SET status = 'completed', completed_at = now(), finished_at = now(), updated_at = now()
 WHERE k.campaign_id = ANY($1::text[]) AND k.started_by_cli AND k.status = 'running'
   AND (k.loading_until IS NULL OR k.loading_until < now())
   AND NOT EXISTS (SELECT 1 FROM campaign_counts n WHERE n.campaign_id = k.campaign_id
                   AND n.status IN ('pending', 'sending') AND n.n > 0)
RETURNING k.campaign_id
"""

# A contact deferred to a later round (`next_attempt_at` ahead) is not claimed from a
# redelivered or republished page: that page drops it, and the re-drive sends it when due.
# Claiming clears `next_attempt_at`, so the re-drive never sends a claimed contact again.
# Claims and held checks join the ids with their campaign as two arrays, never as
# `campaign_id = $1 AND contact_id = ANY($2)`: with a constant campaign, a planner whose
# statistics predate the campaign (a 100,000-contact `campaign start`) scanned all the
# campaign's rows for every page, 5-100x slower. With both key columns from the join, the
# plan is one primary-key probe per id whatever the statistics say.
_CLAIM_SQL = """
UPDATE contacts AS c
   SET status = 'sending', lease_owner = $3,
       lease_until = now() + make_interval(secs => $4), updated_at = now(),
       next_attempt_at = NULL
  FROM unnest($1::text[], $2::text[]) AS i(campaign_id, contact_id)
 WHERE c.campaign_id = i.campaign_id AND c.contact_id = i.contact_id
   AND ((c.status = 'pending' AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now()))
        OR (c.status = 'sending' AND c.lease_until < now()))
RETURNING c.contact_id
"""

# The status is tested outside the probe (OFFSET 0 keeps the subquery whole): with
# `status = 'sending'` beside the key, the planner ANDed every probe with a scan of the
# whole partial lease index (all contacts in flight, and on stale statistics millions
# of dead entries): 0.3-3 s per page instead of 1,000 primary-key probes.
_HELD_SQL = """
SELECT DISTINCT h.contact_id FROM (
    SELECT c.contact_id, c.status FROM contacts AS c
      JOIN unnest($1::text[], $2::text[]) AS i(campaign_id, contact_id)
        ON c.campaign_id = i.campaign_id AND c.contact_id = i.contact_id
    OFFSET 0
) AS h WHERE h.status = 'sending'
"""

# A lease is only ever held on a `sending` row (the claim sets both, this clears both),
# so the owner check is the status check. Saying `status = 'sending'` as well would let
# the planner scan the partial lease index for every outcome row (all the leases its
# owner holds, thousands), which on a campaign newer than its statistics took seconds
# per batch; without it the only sane plan is one primary-key probe per outcome.
# A deferral (`defer_s` set) sets `next_attempt_at` and appends the round's codes; any
# other outcome clears it.
_RECORD_SQL = """
UPDATE contacts AS c
   SET status = o.status,
       attempts = c.attempts + o.attempts,
       reason = COALESCE(o.reason, c.reason),
       last_status_code = COALESCE(o.last_status_code, c.last_status_code),
       lease_owner = NULL, lease_until = NULL, updated_at = now(),
       finished_at = CASE WHEN o.status = 'pending' THEN NULL ELSE now() END,
       next_attempt_at = now() + make_interval(secs => o.defer_s),
       deferred_rounds = c.deferred_rounds + (o.defer_s IS NOT NULL)::int,
       earlier_codes = CASE WHEN o.defer_s IS NULL THEN c.earlier_codes
                            ELSE c.earlier_codes || o.codes::jsonb END
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[],
              $8::float8[], $9::text[])
       AS o(campaign_id, contact_id, status, attempts, reason, last_status_code, defer_s, codes)
 WHERE c.campaign_id = o.campaign_id AND c.contact_id = o.contact_id
   AND c.lease_owner = $7
"""


_RENEW_SQL = """
UPDATE contacts AS c SET lease_until = now() + make_interval(secs => $4)
  FROM unnest($1::text[], $2::text[]) AS i(campaign_id, contact_id)
 WHERE c.campaign_id = i.campaign_id AND c.contact_id = i.contact_id
   AND c.status = 'sending' AND c.lease_owner = $3
"""


class Ledger:
    """Every SQL statement of the consumer's hot path; one pool, no state of its own."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @raises_unavailable
    async def admit(self, page: Page, owner: str, lease_s: float) -> Admission:
        """Register the campaign and contacts (idempotently) and claim the claimable ones.

        Raises `PageRefused` when PostgreSQL refuses what the page holds.
        """
        ids = [contact.contact_id for contact in page.contacts]
        with refused_as_page_error():
            return await self._admit(page, ids, owner, lease_s)

    async def _admit(self, page: Page, ids: list[str], owner: str, lease_s: float) -> Admission:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, inbox_id, message) VALUES ($1, $2, $3)"
                " ON CONFLICT (campaign_id) DO NOTHING",
                page.campaign_id,
                page.inbox_id,
                page.message,
            )
            await store_contacts(conn, page.campaign_id, page.contacts)
            status = await conn.fetchval(
                "SELECT status FROM campaigns WHERE campaign_id = $1", page.campaign_id
            )
            if status != "running":
                return Admission(status, (), ())
            claimed, held = await self._claim(conn, page.campaign_id, ids, owner, lease_s)
        return Admission(status, claimed, held)

    @raises_unavailable
    async def reclaim(
        self, campaign_id: str, contact_ids: Sequence[str], owner: str, lease_s: float
    ) -> tuple[list[str], list[str]]:
        """Claim those of `contact_ids` whose lease has lapsed; return (claimed, still held)."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._claim(conn, campaign_id, list(contact_ids), owner, lease_s)

    @staticmethod
    async def _claim(
        conn: PoolConnectionProxy[asyncpg.Record],
        campaign_id: str,
        ids: list[str],
        owner: str,
        lease_s: float,
    ) -> tuple[list[str], list[str]]:
        campaigns = [campaign_id] * len(ids)
        rows = await conn.fetch(_CLAIM_SQL, campaigns, ids, owner, lease_s)
        claimed = [row["contact_id"] for row in rows]
        taken = set(claimed)
        held_rows = await conn.fetch(_HELD_SQL, campaigns, ids)
        held = [row["contact_id"] for row in held_rows if row["contact_id"] not in taken]
        return claimed, held

    @raises_unavailable
    async def record(self, outcomes: Sequence[ContactOutcome], owner: str) -> None:
        """Write a batch of outcomes in one statement; only leases `owner` still holds."""
        columns: list[list[Any]] = [[], [], [], [], [], [], [], []]
        for o in outcomes:
            # JSON text: a list of lists would go out as a 2-D array, which unnest flattens.
            codes = orjson.dumps(o.round_codes).decode() if o.defer_s is not None else None
            for column, value in zip(
                columns,
                (
                    o.campaign_id,
                    o.contact_id,
                    o.status,
                    o.attempts,
                    o.reason,
                    o.last_status_code,
                    o.defer_s,
                    codes,
                ),
                strict=True,
            ):
                column.append(value)
        finished = sorted({o.campaign_id for o in outcomes if o.status != "pending"})
        async with self._pool.acquire() as conn:
            await conn.execute(_RECORD_SQL, *columns[:6], owner, *columns[6:])
            if finished:
                await conn.fetch(COMPLETE_SQL, finished)

    @raises_unavailable
    async def earlier_rounds(self, campaign_id: str, contact_id: str) -> EarlierRounds:
        """The contact's deferred rounds so far and every attempt's code in them."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT deferred_rounds, earlier_codes FROM contacts"
                " WHERE campaign_id = $1 AND contact_id = $2",
                campaign_id,
                contact_id,
            )
        if row is None:
            return FIRST_ROUND
        return EarlierRounds(row["deferred_rounds"], tuple(row["earlier_codes"]))

    @raises_unavailable
    async def renew_leases(
        self, owner: str, lease_s: float, campaign_ids: Sequence[str], contact_ids: Sequence[str]
    ) -> int:
        """Extend the leases `owner` holds on these contacts (those in flight); return how many.

        Only the contacts named: a `sending` row whose task is gone must see its lease lapse.
        """
        if not contact_ids:
            return 0
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                _RENEW_SQL, list(campaign_ids), list(contact_ids), owner, lease_s
            )
        return int(result.split()[-1])

    @raises_unavailable
    async def campaign_status(self, campaign_id: str) -> CampaignStatus | None:
        """The campaign's status, or None when the ledger does not know it."""
        async with self._pool.acquire() as conn:
            status = await conn.fetchval(
                "SELECT status FROM campaigns WHERE campaign_id = $1", campaign_id
            )
        return cast(CampaignStatus | None, status)
