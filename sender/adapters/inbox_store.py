"""Per-inbox settings an operator stores in PostgreSQL: rate overrides and holds."""

from __future__ import annotations

import asyncpg

from sender.adapters.postgres import raises_unavailable
from sender.core.ratelimit import Rate


class InboxStore:
    """The `inbox_rates` and `inbox_holds` tables: `sender inbox set-rate|pause|resume`
    write them, every consumer reads them."""

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

    async def hold(self, inbox_id: str) -> None:
        """Put an operator hold on the inbox (idempotent)."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO inbox_holds (inbox_id) VALUES ($1) ON CONFLICT DO NOTHING", inbox_id
            )

    async def release(self, inbox_id: str) -> bool:
        """Lift the operator hold; False when there was none."""
        async with self._pool.acquire() as conn:
            done = await conn.execute("DELETE FROM inbox_holds WHERE inbox_id = $1", inbox_id)
        return bool(done != "DELETE 0")

    @raises_unavailable
    async def is_held(self, inbox_id: str) -> bool:
        """True while an operator hold is on the inbox."""
        async with self._pool.acquire() as conn:
            found = await conn.fetchval("SELECT 1 FROM inbox_holds WHERE inbox_id = $1", inbox_id)
        return found is not None
