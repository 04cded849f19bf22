"""Campaign control: start, pause, stop, resume, retry-failed — the ledger first, then Redis.

The CLI and the demo call these; the consumer only ever sees their effects (statuses in
the ledger and Redis, pages in the queue).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.page_publisher import PagePublisher
from sender.adapters.redis_status import StatusCache
from sender.core.contacts_csv import ContactChunk
from sender.core.page import Contact, Page
from sender.core.pagination import paginate
from sender.core.ports import CampaignStatus
from sender.errors import CampaignStateError, UnknownCampaign
from sender.runtime.campaign_start import Chunk, OnProgress, PageSpec, StartPipeline
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
        contacts: list[Contact] | Iterator[Chunk],
        page_size: int,
        on_progress: OnProgress = lambda _: None,
    ) -> Published:
        """Register the campaign, store the contacts chunk by chunk, and publish each chunk's
        pending contacts once it is stored (streaming: see `campaign_start`).

        Running it again is harmless: contacts are stored once, finished ones stay finished,
        and pending ones (say, of a start killed halfway) are published again.
        """
        chunks: Iterator[Chunk] = (
            iter([_one_chunk(contacts)]) if isinstance(contacts, list) else contacts
        )
        # A file whose first chunk is bad is refused before the campaign is even registered.
        first = await asyncio.to_thread(next, chunks, None)
        chunks = itertools.chain([] if first is None else [first], chunks)
        status = await self._ledger.register_campaign(campaign_id, inbox_id, message)
        if status == "stopped":
            raise CampaignStateError(campaign_id, status, "stop is final; nothing was published")

        async def reopen() -> None:
            if status == "completed":
                await self._move(campaign_id, "running", frozenset({"completed"}))

        spec = PageSpec(campaign_id, inbox_id, message, page_size, self._settings.max_page_bytes)
        async with self._ledger.loading(campaign_id) as loader:
            progress = await StartPipeline(loader, self._publisher, spec, reopen, on_progress).run(
                chunks
            )
        return Published(progress.published, progress.pages)

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

    async def republish(self, campaign_id: str, on_page: OnPage = lambda _: None) -> Published:
        """Publish pages for the pending contacts of a campaign (its inbox was held)."""
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


def _one_chunk(contacts: list[Contact]) -> ContactChunk:
    """Contacts already validated (the demo's), as one chunk; lines count from 2."""
    return ContactChunk(
        [(c.contact_id, c.to, c.variables, line) for line, c in enumerate(contacts, start=2)]
    )
