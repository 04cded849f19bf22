"""PostgreSQL ledger (asyncpg): campaigns, contact claims with leases, batched outcomes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from sender.errors import DependencyUnavailable
from sender.page import Contact, Page
from sender.ports import Admission, CampaignStatus, ContactOutcome
from sender.ratelimit import Rate

P = ParamSpec("P")
T = TypeVar("T")

_INSERT_CHUNK = 5000
# A statement that takes longer than this is treated as PostgreSQL being unreachable.
COMMAND_TIMEOUT_S = 10.0

# Errors that mean "PostgreSQL cannot be reached right now", as opposed to a bad statement.
LEDGER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

# A campaign run by `campaign start` is completed once nothing is pending or in flight.
_COMPLETE_SQL = """
UPDATE campaigns AS k SET status = 'completed', completed_at = now(), updated_at = now()
 WHERE k.campaign_id = ANY($1::text[]) AND k.started_by_cli AND k.status = 'running'
   AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.campaign_id = k.campaign_id
                   AND c.status IN ('pending', 'sending'))
RETURNING k.campaign_id
"""

# Claims and held checks join the ids with their campaign as two arrays, never as
# `campaign_id = $1 AND contact_id = ANY($2)`: with a constant campaign, a planner whose
# statistics predate the campaign (a 100,000-contact `campaign start`) scanned all the
# campaign's rows for every page, 5-100x slower. With both key columns from the join, the
# plan is one primary-key probe per id whatever the statistics say.
_CLAIM_SQL = """
UPDATE contacts AS c
   SET status = 'sending', lease_owner = $3,
       lease_until = now() + make_interval(secs => $4), updated_at = now()
  FROM unnest($1::text[], $2::text[]) AS i(campaign_id, contact_id)
 WHERE c.campaign_id = i.campaign_id AND c.contact_id = i.contact_id
   AND (c.status = 'pending' OR (c.status = 'sending' AND c.lease_until < now()))
RETURNING c.contact_id
"""

_HELD_SQL = """
SELECT DISTINCT c.contact_id FROM contacts AS c
  JOIN unnest($1::text[], $2::text[]) AS i(campaign_id, contact_id)
    ON c.campaign_id = i.campaign_id AND c.contact_id = i.contact_id
 WHERE c.status = 'sending'
"""

# A lease is only ever held on a `sending` row (the claim sets both, this clears both),
# so the owner check is the status check. Saying `status = 'sending'` as well would let
# the planner scan the partial lease index for every outcome row (all the leases its
# owner holds, thousands), which on a campaign newer than its statistics took seconds
# per batch; without it the only sane plan is one primary-key probe per outcome.
_RECORD_SQL = """
UPDATE contacts AS c
   SET status = o.status,
       attempts = c.attempts + o.attempts,
       reason = COALESCE(o.reason, c.reason),
       last_status_code = COALESCE(o.last_status_code, c.last_status_code),
       lease_owner = NULL, lease_until = NULL, updated_at = now(),
       finished_at = CASE WHEN o.status = 'pending' THEN NULL ELSE now() END
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[])
       AS o(campaign_id, contact_id, status, attempts, reason, last_status_code)
 WHERE c.campaign_id = o.campaign_id AND c.contact_id = o.contact_id
   AND c.lease_owner = $7
"""


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

    @property
    def total(self) -> int:
        """Every contact of the campaign."""
        return sum(self.counts.values())


async def autovacuum_enabled(
    conn: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record],
) -> bool:
    """Whether the server runs autovacuum (contacts pile up dead rows quickly without it)."""
    return bool(await conn.fetchval("SELECT current_setting('autovacuum') = 'on'"))


async def connect_pool(database_url: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections decode jsonb with orjson."""

    async def _init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )

    return await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        init=_init,
        timeout=COMMAND_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
    )


def _raises_unavailable(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn "cannot reach PostgreSQL" errors into `DependencyUnavailable("postgres")`."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except LEDGER_UNAVAILABLE as error:
            raise DependencyUnavailable("postgres", type(error).__name__) from error

    return wrapper


class Ledger:
    """Every SQL statement of `sender`; one pool, no state of its own."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @_raises_unavailable
    async def admit(self, page: Page, owner: str, lease_s: float) -> Admission:
        """Register the campaign and contacts (idempotently) and claim the claimable ones."""
        ids = [contact.contact_id for contact in page.contacts]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, inbox_id, message) VALUES ($1, $2, $3)"
                " ON CONFLICT (campaign_id) DO NOTHING",
                page.campaign_id,
                page.inbox_id,
                page.message,
            )
            await conn.execute(
                "INSERT INTO contacts (campaign_id, contact_id, to_address, variables)"
                " SELECT $1, c, t, v FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS u(c, t, v)"
                " ON CONFLICT (campaign_id, contact_id) DO NOTHING",
                page.campaign_id,
                ids,
                [contact.to for contact in page.contacts],
                [contact.variables for contact in page.contacts],
            )
            status = await conn.fetchval(
                "SELECT status FROM campaigns WHERE campaign_id = $1", page.campaign_id
            )
            if status != "running":
                return Admission(status, (), ())
            claimed, held = await self._claim(conn, page.campaign_id, ids, owner, lease_s)
        return Admission(status, claimed, held)

    @_raises_unavailable
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

    @_raises_unavailable
    async def record(self, outcomes: Sequence[ContactOutcome], owner: str) -> None:
        """Write a batch of outcomes in one statement; only leases `owner` still holds."""
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for o in outcomes:
            for column, value in zip(
                columns,
                (o.campaign_id, o.contact_id, o.status, o.attempts, o.reason, o.last_status_code),
                strict=True,
            ):
                column.append(value)
        finished = sorted({o.campaign_id for o in outcomes if o.status != "pending"})
        async with self._pool.acquire() as conn:
            await conn.execute(_RECORD_SQL, *columns, owner)
            if finished:
                await conn.fetch(_COMPLETE_SQL, finished)

    @_raises_unavailable
    async def renew_leases(self, owner: str, lease_s: float) -> int:
        """Extend every lease `owner` holds; return how many."""
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                "UPDATE contacts SET lease_until = now() + make_interval(secs => $2)"
                " WHERE status = 'sending' AND lease_owner = $1",
                owner,
                lease_s,
            )
        return int(result.split()[-1])

    @_raises_unavailable
    async def campaign_status(self, campaign_id: str) -> CampaignStatus | None:
        """The campaign's status, or None when the ledger does not know it."""
        async with self._pool.acquire() as conn:
            status = await conn.fetchval(
                "SELECT status FROM campaigns WHERE campaign_id = $1", campaign_id
            )
        return cast(CampaignStatus | None, status)

    async def summary(self, campaign_id: str) -> CampaignSummary | None:
        """Status and per-status counts, or None for an unknown campaign."""
        async with self._pool.acquire() as conn:
            campaign = await conn.fetchrow(
                "SELECT status, inbox_id FROM campaigns WHERE campaign_id = $1", campaign_id
            )
            if campaign is None:
                return None
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM contacts WHERE campaign_id = $1 GROUP BY status",
                campaign_id,
            )
        counts = {"pending": 0, "sending": 0, "sent": 0, "failed": 0}
        counts.update({row["status"]: row["n"] for row in rows})
        return CampaignSummary(campaign_id, campaign["status"], campaign["inbox_id"], counts)

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

    async def set_inbox_rate(self, inbox_id: str, rate: Rate) -> None:
        """Store (or replace) one inbox's rate override."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO inbox_rates (inbox_id, rate_per_sec, burst) VALUES ($1, $2, $3)"
                " ON CONFLICT (inbox_id) DO UPDATE SET rate_per_sec = $2, burst = $3,"
                " updated_at = now()",
                inbox_id,
                rate.per_sec,
                rate.burst,
            )

    async def inbox_rates(self) -> dict[str, Rate]:
        """Every rate override, by inbox id."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT inbox_id, rate_per_sec, burst FROM inbox_rates")
        return {row["inbox_id"]: Rate(row["rate_per_sec"], row["burst"]) for row in rows}

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

    async def insert_contacts(self, campaign_id: str, contacts: Sequence[Contact]) -> int:
        """Store contacts idempotently (existing ones untouched); return how many were new."""
        added = 0
        async with self._pool.acquire() as conn:
            for start in range(0, len(contacts), _INSERT_CHUNK):
                chunk = contacts[start : start + _INSERT_CHUNK]
                result = await conn.execute(
                    "INSERT INTO contacts (campaign_id, contact_id, to_address, variables)"
                    " SELECT $1, c, t, v FROM unnest($2::text[], $3::text[], $4::jsonb[])"
                    " AS u(c, t, v) ON CONFLICT (campaign_id, contact_id) DO NOTHING",
                    campaign_id,
                    [c.contact_id for c in chunk],
                    [c.to for c in chunk],
                    [c.variables for c in chunk],
                )
                added += int(result.split()[-1])
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
                    " completed_at = CASE WHEN $2 = 'completed' THEN now() END"
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
        """Every `pending` contact of the campaign, in contact id order."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT contact_id, to_address, variables FROM contacts"
                " WHERE campaign_id = $1 AND status = 'pending' ORDER BY contact_id",
                campaign_id,
            )
        return [Contact(contact_id=r[0], to=r[1], variables=r[2]) for r in rows]

    async def reset_failed(self, campaign_id: str, reason_prefix: str) -> int:
        """Failed contacts whose reason starts with the prefix go back to `pending`."""
        async with self._pool.acquire() as conn, conn.transaction():
            result = await conn.execute(
                "UPDATE contacts SET status = 'pending', reason = NULL, finished_at = NULL,"
                " updated_at = now() WHERE campaign_id = $1 AND status = 'failed'"
                " AND starts_with(coalesce(reason, ''), $2)",
                campaign_id,
                reason_prefix,
            )
            reset = int(result.split()[-1])
            if reset:
                await conn.execute(
                    "UPDATE campaigns SET status = 'running', completed_at = NULL,"
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
