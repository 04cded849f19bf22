"""Per-inbox settings an operator stores in PostgreSQL: rate overrides."""

from __future__ import annotations

import asyncpg

from sender.adapters.postgres import raises_unavailable
from sender.core.ratelimit import Rate


class InboxStore:
    """The `inbox_rates` table: `sender inbox set-rate` writes it, every consumer reads it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def set_rate(self, inbox_id: str, rate: Rate) -> None:
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

    @raises_unavailable
    async def rates(self) -> dict[str, Rate]:
        """Every rate override, by inbox id."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT inbox_id, rate_per_sec, burst FROM inbox_rates")
        return {row["inbox_id"]: Rate(row["rate_per_sec"], row["burst"]) for row in rows}
