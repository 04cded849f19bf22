"""The re-drive: deferred contacts that are due go out again as continuation pages.

Every consumer runs one. Each pass claims up to `batch` due contacts (other pods skip
them), publishes their pages with confirms and only then clears them; a pass that found
a full batch runs again at once, otherwise the next one starts `poll_s` later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sender.core.page import Contact, Page
from sender.core.pagination import paginate

log = logging.getLogger(__name__)


class DueGroup(Protocol):
    """One campaign's due contacts (`sender.adapters.deferred_ledger.DueCampaign`)."""

    @property
    def campaign_id(self) -> str: ...
    @property
    def inbox_id(self) -> str: ...
    @property
    def message(self) -> dict[str, Any]: ...
    @property
    def contacts(self) -> list[Contact]: ...


class DueSource(Protocol):
    """Claims due contacts for the block; clears them when the block ends cleanly."""

    def claim_due(self, limit: int) -> AbstractAsyncContextManager[Sequence[DueGroup]]: ...


PublishPage = Callable[[Page], Awaitable[None]]
Nap = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RedriveConfig:
    """How much one pass takes and how often an idle re-drive looks."""

    batch: int = 1000
    poll_s: float = 1.0
    page_size: int = 1000
    max_page_bytes: int = 2 * 1024 * 1024


class Redrive:
    """Publishes due deferred contacts as pages, forever (run it under the supervisor)."""

    def __init__(
        self, source: DueSource, publish: PublishPage, nap: Nap, config: RedriveConfig
    ) -> None:
        self._source = source
        self._publish = publish
        self._nap = nap
        self._config = config

    async def run_forever(self) -> None:
        """Pass after pass; a failing pass raises (the supervisor restarts with backoff)."""
        while True:
            if await self.run_once() < self._config.batch:
                await self._nap(self._config.poll_s)

    async def run_once(self) -> int:
        """One pass: publish every claimed contact's page; return how many contacts."""
        cfg = self._config
        async with self._source.claim_due(cfg.batch) as groups:
            sent = 0
            for group in groups:
                for page in paginate(
                    group.campaign_id,
                    group.inbox_id,
                    group.message,
                    group.contacts,
                    page_size=cfg.page_size,
                    max_bytes=cfg.max_page_bytes,
                ):
                    await self._publish(page)
                sent += len(group.contacts)
        if sent:
            log.info("deferred contacts re-driven", extra={"contacts": sent})
        return sent
