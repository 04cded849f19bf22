"""Publishing pages the way DESIGN §2 asks: persistent, JSON, default exchange, confirmed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from sender.consumer import declare_topology, page_message
from sender.page import Contact, Page
from sender.settings import Settings


def paginate(
    campaign_id: str,
    inbox_id: str,
    message: dict[str, Any],
    contacts: Sequence[Contact],
    *,
    page_size: int,
    max_bytes: int,
) -> Iterator[Page]:
    """Cut contacts into pages of at most `page_size` contacts and `max_bytes` bytes."""
    number = 0
    for start in range(0, len(contacts), page_size):
        for page in _fit(
            Page(
                campaign_id=campaign_id,
                page=number,
                inbox_id=inbox_id,
                message=message,
                contacts=list(contacts[start : start + page_size]),
            ),
            max_bytes,
        ):
            yield page.model_copy(update={"page": number})
            number += 1


def _fit(page: Page, max_bytes: int) -> Iterator[Page]:
    """Split a page in halves until every part is small enough."""
    if len(page.to_json()) <= max_bytes or len(page.contacts) == 1:
        yield page
        return
    half = len(page.contacts) // 2
    yield from _fit(page.with_contacts(page.contacts[:half]), max_bytes)
    yield from _fit(page.with_contacts(page.contacts[half:]), max_bytes)


class PagePublisher:
    """A confirmed-publish channel to the pages queue (declared if missing)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> PagePublisher:
        self._connection = await aio_pika.connect(self._settings.amqp_url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(
        self, pages: Iterator[Page], on_page: Callable[[Page], None] = lambda _: None
    ) -> int:
        """Publish each page and wait for the broker's confirm; return how many."""
        assert self._channel is not None
        count = 0
        for page in pages:
            if count == 0:  # declared on first use: commands that publish nothing create nothing
                await declare_topology(self._channel, self._settings)
            await self._channel.default_exchange.publish(
                page_message(page.to_json()), routing_key=self._settings.pages_queue
            )
            on_page(page)
            count += 1
        return count
