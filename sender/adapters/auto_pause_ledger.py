"""The ledger side of auto-pause: a campaign's last final outcomes, and pausing it."""

from __future__ import annotations

import asyncpg

from sender.adapters.postgres import raises_unavailable
from sender.core.auto_pause import OutcomeWindow

# The last N contacts to finish (index contacts_recent_outcomes, newest first), counted
# from the campaign's last resume; failures grouped as `failure_reasons` groups them
# (exhausted retries folded into one kind).
_WINDOW_SQL = """
WITH recent AS (
    SELECT c.status, c.reason FROM contacts AS c
     WHERE c.campaign_id = $1 AND c.finished_at IS NOT NULL
       AND c.finished_at >= (SELECT coalesce(outcomes_judged_from, '-infinity')
                               FROM campaigns WHERE campaign_id = $1)
     ORDER BY c.finished_at DESC LIMIT $2
), kinds AS (
    SELECT CASE WHEN reason LIKE 'dispatch_exhausted_retries:%'
                THEN 'dispatch_exhausted_retries' ELSE coalesce(reason, '') END AS kind
      FROM recent WHERE status = 'failed'
)
SELECT (SELECT count(*) FROM recent) AS outcomes,
       (SELECT count(*) FROM kinds) AS failed,
       (SELECT kind FROM kinds GROUP BY kind ORDER BY count(*) DESC, kind LIMIT 1) AS top
"""

# Conditional on `running`: of two pods judging at once, one pauses it.
_PAUSE_SQL = """
UPDATE campaigns SET status = 'paused', status_reason = $2, updated_at = now()
 WHERE campaign_id = $1 AND status = 'running'
RETURNING campaign_id
"""


class AutoPauseLedger:
    """`OutcomeJudge` over PostgreSQL: every pod's outcomes, one truth."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @raises_unavailable
    async def recent_outcomes(self, campaign_id: str, window: int) -> OutcomeWindow:
        """The campaign's last `window` final outcomes since its last resume."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_WINDOW_SQL, campaign_id, window)
        assert row is not None  # an aggregate always returns its one row
        return OutcomeWindow(row["outcomes"], row["failed"], row["top"])

    @raises_unavailable
    async def pause_itself(self, campaign_id: str, reason: str) -> bool:
        """Running -> paused with `reason` as its `status_reason`; False if not running."""
        async with self._pool.acquire() as conn:
            return await conn.fetchval(_PAUSE_SQL, campaign_id, reason) is not None
