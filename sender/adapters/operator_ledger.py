"""The operator's ledger: campaign registration, transitions, read models for the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

import asyncpg

from sender.adapters.contact_loader import ContactLoader
from sender.adapters.ledger import store_contacts
from sender.core.page import Contact
from sender.core.ports import CampaignStatus, ContactStatus

_INSERT_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed contact, as `sender campaign failures` shows it."""

    contact_id: str
    reason: str | None
    attempts: int
    last_status_code: int | None


@dataclass(frozen=True, slots=True)
class CampaignSummary:
    """A campaign and how many contacts are in each status."""

    campaign_id: str
    status: CampaignStatus
    inbox_id: str
    counts: dict[str, int]
    status_reason: str | None = None
    deferred: int = 0

    @property
    def total(self) -> int:
        """Every contact of the campaign."""
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class CountDrift:
    """A kept count that does not match the contacts (`sender db check` reports these)."""

    campaign_id: str
    status: str
    kept: int
    actual: int


# `deferred` counts over the partial index of deferred contacts (migration 007): only
# this campaign's contacts waiting for a deferred round are read, however big it is.
# A campaign with its kept counts (one row per status counted) and its deferred contacts
# (a count over the partial index of deferred contacts, small by nature).
_CAMPAIGN_ROWS = """
SELECT k.campaign_id, k.status, k.inbox_id, k.status_reason, d.deferred,
       n.status AS counted, n.n
  FROM campaigns AS k
 CROSS JOIN LATERAL (
       SELECT count(*) AS deferred FROM contacts AS c
        WHERE c.campaign_id = k.campaign_id AND c.status = 'pending'
          AND c.next_attempt_at IS NOT NULL) AS d
  LEFT JOIN campaign_counts AS n ON n.campaign_id = k.campaign_id
"""
_SUMMARY_SQL = _CAMPAIGN_ROWS + " WHERE k.campaign_id = $1"
_LIST_SQL = (
    _CAMPAIGN_ROWS
    + " WHERE ($1::text IS NULL OR k.status = $1) AND ($2::text IS NULL OR k.inbox_id = $2)"
    + " ORDER BY k.created_at DESC, k.campaign_id"
)

_DRIFT_SQL = """
WITH actual AS (
    SELECT campaign_id, status, count(*) AS n FROM contacts
     WHERE $1::text IS NULL OR campaign_id = $1 GROUP BY campaign_id, status
), kept AS (
    SELECT campaign_id, status, n FROM campaign_counts
     WHERE ($1::text IS NULL OR campaign_id = $1) AND n <> 0
)
SELECT campaign_id, status, coalesce(kept.n, 0) AS kept, coalesce(actual.n, 0) AS actual
  FROM kept FULL JOIN actual USING (campaign_id, status)
 WHERE kept.n IS DISTINCT FROM actual.n
 ORDER BY campaign_id, status
"""


def _summary_of(rows: Sequence[asyncpg.Record]) -> CampaignSummary:
    """One campaign's summary from its rows of `_CAMPAIGN_ROWS`."""
    counts = dict.fromkeys(get_args(ContactStatus), 0)
    counts.update({row["counted"]: row["n"] for row in rows if row["counted"] is not None})
    first = rows[0]
    return CampaignSummary(
        first["campaign_id"],
        first["status"],
        first["inbox_id"],
        counts,
        status_reason=first["status_reason"],
        deferred=first["deferred"],
    )


class OperatorLedger:
    """The SQL behind `sender campaign|inbox` commands and the demo's progress view."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def campaign_status(self, campaign_id: str) -> CampaignStatus | None:
        """The campaign's status, or None when the ledger does not know it."""
        async with self._pool.acquire() as conn:
            status = await conn.fetchval(
                "SELECT status FROM campaigns WHERE campaign_id = $1", campaign_id
            )
        return cast(CampaignStatus | None, status)

    async def summary(self, campaign_id: str) -> CampaignSummary | None:
        """Status and per-status counts, or None for an unknown campaign.

        One primary-key read of the campaign and its kept counts (migration 005): the
        same cost at ten contacts as at ten million.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_SUMMARY_SQL, campaign_id)
        if not rows:
            return None
        return _summary_of(rows)

    async def campaigns(
        self, status: CampaignStatus | None = None, inbox_id: str | None = None
    ) -> list[CampaignSummary]:
        """Every campaign (or those with this status / inbox) with its counts, newest first.

        One read of the campaigns and their kept counts: no contact row is touched.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_LIST_SQL, status, inbox_id)
        by_campaign: dict[str, list[asyncpg.Record]] = {}
        for row in rows:  # already newest first; dicts keep that order
            by_campaign.setdefault(row["campaign_id"], []).append(row)
        return [_summary_of(group) for group in by_campaign.values()]

    async def count_drift(self, campaign_id: str | None = None) -> list[CountDrift]:
        """Kept counts that differ from a recount of the contacts (none when all is well).

        Reads every contact of the campaign (or of all campaigns): for checks, not hot paths.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_DRIFT_SQL, campaign_id)
        return [CountDrift(r["campaign_id"], r["status"], r["kept"], r["actual"]) for r in rows]

    async def failures(self, campaign_id: str, reason_prefix: str = "") -> list[Failure]:
        """Failed contacts whose reason starts with `reason_prefix`, in contact id order."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT contact_id, reason, attempts, last_status_code FROM contacts"
                " WHERE campaign_id = $1 AND status = 'failed'"
                " AND starts_with(coalesce(reason, ''), $2) ORDER BY contact_id",
                campaign_id,
                reason_prefix,
            )
        return [
            Failure(r["contact_id"], r["reason"], r["attempts"], r["last_status_code"])
            for r in rows
        ]

    async def register_campaign(
        self, campaign_id: str, inbox_id: str, message: dict[str, Any]
    ) -> CampaignStatus:
        """Create (or adopt) a campaign run by `campaign start`; return its status."""
        async with self._pool.acquire() as conn:
            status = await conn.fetchval(
                "INSERT INTO campaigns (campaign_id, inbox_id, message, started_by_cli)"
                " VALUES ($1, $2, $3, true) ON CONFLICT (campaign_id)"
                " DO UPDATE SET started_by_cli = true RETURNING status",
                campaign_id,
                inbox_id,
                message,
            )
        return cast(CampaignStatus, status)

    @contextlib.asynccontextmanager
    async def loading(self, campaign_id: str) -> AsyncIterator[ContactLoader]:
        """A loader for one `campaign start`, over a connection held until it is done."""
        async with self._pool.acquire() as conn:
            yield ContactLoader(conn, campaign_id)

    async def insert_contacts(self, campaign_id: str, contacts: Sequence[Contact]) -> int:
        """Store contacts idempotently (existing ones untouched); return how many were new."""
        added = 0
        async with self._pool.acquire() as conn:
            for start in range(0, len(contacts), _INSERT_CHUNK):
                chunk = contacts[start : start + _INSERT_CHUNK]
                added += await store_contacts(conn, campaign_id, chunk)
        return added

    async def transition(
        self, campaign_id: str, to: CampaignStatus, allowed_from: frozenset[str]
    ) -> CampaignStatus | None:
        """Move the campaign to `to` if its status is one of `allowed_from`.

        Returns the status it had (None when it is unknown); a status outside
        `allowed_from` is returned unchanged and nothing is written.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT status FROM campaigns WHERE campaign_id = $1 FOR UPDATE", campaign_id
            )
            if current in allowed_from:
                await conn.execute(
                    "UPDATE campaigns SET status = $2, updated_at = now(),"
                    " completed_at = CASE WHEN $2 = 'completed' THEN now() END,"
                    " finished_at = CASE WHEN $2 IN ('completed', 'stopped')"
                    " THEN coalesce(finished_at, now()) END,"
                    # Resuming clears why it paused itself, and judges it afresh.
                    " status_reason = CASE WHEN $2 = 'running' THEN NULL ELSE status_reason END,"
                    " outcomes_judged_from = CASE WHEN $2 = 'running' THEN now()"
                    " ELSE outcomes_judged_from END"
                    " WHERE campaign_id = $1",
                    campaign_id,
                    to,
                )
        return cast(CampaignStatus | None, current)

    async def campaign(self, campaign_id: str) -> tuple[str, dict[str, Any]] | None:
        """The campaign's inbox id and message, or None."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT inbox_id, message FROM campaigns WHERE campaign_id = $1", campaign_id
            )
        return None if row is None else (row["inbox_id"], row["message"])

    async def pending_contacts(self, campaign_id: str) -> list[Contact]:
        """Every contact to send again, in contact id order: `pending`, and `sending` whose
        lease has lapsed (its pod or task is gone, its page perhaps dead-lettered).

        Not those waiting for a deferred round: the re-drive sends each when it is due.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT contact_id, to_address, variables FROM contacts"
                " WHERE campaign_id = $1 AND (status = 'pending' AND next_attempt_at IS NULL"
                " OR (status = 'sending' AND lease_until < now())) ORDER BY contact_id",
                campaign_id,
            )
        return [Contact(contact_id=r[0], to=r[1], variables=r[2]) for r in rows]

    async def reset_failed(self, campaign_id: str, reason_prefix: str) -> int:
        """Failed contacts whose reason starts with the prefix go back to `pending`."""
        async with self._pool.acquire() as conn, conn.transaction():
            result = await conn.execute(
                "UPDATE contacts SET status = 'pending', reason = NULL, finished_at = NULL,"
                " deferred_rounds = 0, earlier_codes = '[]', next_attempt_at = NULL,"
                " updated_at = now() WHERE campaign_id = $1 AND status = 'failed'"
                " AND starts_with(coalesce(reason, ''), $2)",
                campaign_id,
                reason_prefix,
            )
            reset = int(result.split()[-1])
            if reset:
                await conn.execute(
                    "UPDATE campaigns SET status = 'running', completed_at = NULL,"
                    " finished_at = NULL,"
                    " updated_at = now() WHERE campaign_id = $1 AND status = 'completed'",
                    campaign_id,
                )
        return reset

    async def failure_reasons(self, campaign_id: str) -> dict[str, int]:
        """Failed contacts per reason (exhausted retries folded into one line)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT CASE WHEN reason LIKE 'dispatch_exhausted_retries:%'"
                " THEN 'dispatch_exhausted_retries' ELSE coalesce(reason, '') END AS kind,"
                " count(*) AS n FROM contacts WHERE campaign_id = $1 AND status = 'failed'"
                " GROUP BY kind ORDER BY n DESC",
                campaign_id,
            )
        return {row["kind"]: row["n"] for row in rows}

    async def waiting_campaigns(self, inbox_id: str) -> list[tuple[str, int]]:
        """Running campaigns of the inbox with contacts not yet final (`pending`, or
        `sending`: claimed and perhaps held in a page), and how many (kept counts)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.campaign_id, sum(k.n) AS n FROM campaigns c JOIN campaign_counts k"
                " ON k.campaign_id = c.campaign_id AND k.status IN ('pending', 'sending')"
                " WHERE c.inbox_id = $1 AND c.status = 'running'"
                " GROUP BY c.campaign_id HAVING sum(k.n) > 0 ORDER BY c.campaign_id",
                inbox_id,
            )
        return [(row["campaign_id"], int(row["n"])) for row in rows]
