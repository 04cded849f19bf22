"""Campaign control: start, pause, stop, resume, retry-failed — the ledger first, then Redis.

The CLI and the demo call these; the consumer only ever sees their effects (statuses in
the ledger and Redis, pages in the queue).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.page_publisher import PagePublisher
from sender.adapters.redis_status import StatusCache
from sender.core.page import Contact, Page
from sender.core.pagination import paginate
from sender.core.ports import CampaignStatus
from sender.errors import CampaignStateError, UnknownCampaign
from sender.settings import Settings

OnPage = Callable[[Page], None]


@dataclass(frozen=True, slots=True)
class Published:
    """What a command sent to the queue."""

    contacts: int
    pages: int


class CampaignControl:
    """Every operator action on a campaign."""

    def __init__(
        self,
        settings: Settings,
        ledger: OperatorLedger,
        statuses: StatusCache,
        publisher: PagePublisher,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._statuses = statuses
        self._publisher = publisher

    async def start(
        self,
        campaign_id: str,
        inbox_id: str,
        message: dict[str, Any],
        contacts: list[Contact],
        page_size: int,
        on_page: OnPage = lambda _: None,
    ) -> Published:
        """Register the campaign and contacts, then publish pages of the pending ones.

        Running it again is harmless: contacts are stored once, finished ones stay finished.
        """
        status = await self._ledger.register_campaign(campaign_id, inbox_id, message)
        if status == "stopped":
            raise CampaignStateError(campaign_id, status, "stop is final; nothing was published")
        added = await self._ledger.insert_contacts(campaign_id, contacts)
        if status == "completed" and added:
            await self._move(campaign_id, "running", frozenset({"completed"}))
        return await self._publish_pending(campaign_id, page_size, on_page)

    async def pause(self, campaign_id: str) -> None:
        """Running -> paused; every consumer stops starting attempts at once."""
        await self._move(campaign_id, "paused", frozenset({"running"}))

    async def stop(self, campaign_id: str) -> None:
        """Running or paused -> stopped, for good."""
        await self._move(campaign_id, "stopped", frozenset({"running", "paused", "stopped"}))

    async def resume(self, campaign_id: str, on_page: OnPage = lambda _: None) -> Published:
        """Paused (or running) -> running, and publish pages for the pending contacts
        (and those left `sending` by a lapsed lease)."""
        await self._move(campaign_id, "running", frozenset({"paused", "running"}))
        return await self._publish_pending(campaign_id, self._page_size(), on_page)

    async def retry_failed(
        self, campaign_id: str, reason_prefix: str, on_page: OnPage = lambda _: None
    ) -> Published:
        """Failed contacts whose reason starts with the prefix go out again (with every
        contact `pending` or left `sending` by a lapsed lease)."""
        status = await self._known(campaign_id)
        if status in ("stopped", "paused"):
            raise CampaignStateError(campaign_id, status, "resume it before retrying failures")
        if await self._ledger.reset_failed(campaign_id, reason_prefix) > 0:
            await self._statuses.announce(campaign_id, "running")
        return await self._publish_pending(campaign_id, self._page_size(), on_page)

    async def _move(self, campaign_id: str, to: CampaignStatus, allowed: frozenset[str]) -> None:
        before = await self._ledger.transition(campaign_id, to, allowed)
        if before is None:
            raise UnknownCampaign(campaign_id)
        if before not in allowed:
            verb = {"paused": "pause", "stopped": "stop", "running": "resume"}[to]
            detail = "stop is final" if before == "stopped" else f"cannot {verb} it"
            raise CampaignStateError(campaign_id, before, detail)
        await self._statuses.announce(campaign_id, to)

    async def _known(self, campaign_id: str) -> CampaignStatus:
        status = await self._ledger.campaign_status(campaign_id)
        if status is None:
            raise UnknownCampaign(campaign_id)
        return status

    async def _publish_pending(
        self, campaign_id: str, page_size: int, on_page: OnPage
    ) -> Published:
        found = await self._ledger.campaign(campaign_id)
        if found is None:
            raise UnknownCampaign(campaign_id)
        inbox_id, message = found
        pending = await self._ledger.pending_contacts(campaign_id)
        pages = paginate(
            campaign_id,
            inbox_id,
            message,
            pending,
            page_size=page_size,
            max_bytes=self._settings.max_page_bytes,
        )
        count = await self._publisher.publish(pages, on_page)
        return Published(len(pending), count)

    def _page_size(self) -> int:
        return self._settings.max_page_contacts
