"""Inbox control: `sender inbox pause|resume|status` — the ledger first, then Redis.

A pause is stored in PostgreSQL (`inbox_holds`, the truth that survives a Redis restart),
then carried to Redis and announced, so every consumer holds the inbox within moments.
`resume` lifts it and republishes the pending contacts of the inbox's running campaigns
(like `campaign resume`), so contacts released while it was held go out again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sender.adapters.inbox_store import InboxStore
from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.redis_inbox_health import RedisInboxHealth
from sender.core.inbox_gate import InboxHealth
from sender.core.ratelimit import Rate
from sender.runtime.campaign_control import CampaignControl, Published


@dataclass(frozen=True, slots=True)
class InboxStatus:
    """What `sender inbox status` shows."""

    inbox_id: str
    rate: Rate
    health: InboxHealth
    waiting: list[tuple[str, int]]
    now: float

    def as_json(self) -> dict[str, Any]:
        """The `inbox status --json` object (documented in docs/OPERATIONS.md)."""
        breaker = self.health.breaker
        retry_after = self.health.retry_after_until
        return {
            "inbox_id": self.inbox_id,
            "rate_per_sec": self.rate.per_sec,
            "burst": self.rate.burst,
            "breaker": {
                "state": breaker.phase,
                "until": _iso(breaker.until) if breaker.phase == "open" else None,
                "cooldown_s": breaker.cooldown_s or None,
            },
            "hold": {
                "operator": self.health.operator_hold,
                "retry_after_until": _iso(retry_after) if retry_after > self.now else None,
            },
            "campaigns_waiting": [
                {"campaign_id": campaign_id, "waiting": waiting}
                for campaign_id, waiting in self.waiting
            ],
        }


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


class InboxControl:
    """Every operator action on an inbox."""

    def __init__(
        self,
        default_rate: Rate,
        ledger: OperatorLedger,
        store: InboxStore,
        health: RedisInboxHealth,
        campaigns: CampaignControl,
    ) -> None:
        self._default_rate = default_rate
        self._ledger = ledger
        self._store = store
        self._health = health
        self._campaigns = campaigns

    async def pause(self, inbox_id: str) -> None:
        """Hold the inbox across every campaign and pod (contacts stay `pending`)."""
        await self._store.hold(inbox_id)
        await self._health.set_operator_hold(inbox_id, True)

    async def resume(self, inbox_id: str) -> Published:
        """Lift the hold and send the waiting campaigns' pending contacts again."""
        await self._store.release(inbox_id)
        await self._health.set_operator_hold(inbox_id, False)
        contacts = pages = 0
        for campaign_id, _ in await self._ledger.waiting_campaigns(inbox_id):
            published = await self._campaigns.republish(campaign_id)
            contacts += published.contacts
            pages += published.pages
        return Published(contacts, pages)

    async def status(self, inbox_id: str, now: float) -> InboxStatus:
        """Rate, breaker, holds and the campaigns waiting for the inbox."""
        rate = (await self._store.rates()).get(inbox_id, self._default_rate)
        health = await self._health.read(inbox_id)
        waiting = await self._ledger.waiting_campaigns(inbox_id)
        return InboxStatus(inbox_id, rate, health, waiting, now)
