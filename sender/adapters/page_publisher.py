"""Publishing pages the way DESIGN §2 asks: persistent, JSON, default exchange, confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from sender.adapters.amqp_topology import declare_topology, page_message
from sender.core.page import Page
from sender.settings import Settings


class PagePublisher:
    """A confirmed-publish channel to the pages queue (declared if missing)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared = False

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

    async def publish_bodies(self, bodies: Sequence[bytes]) -> None:
        """Publish ready page bodies side by side and wait for every confirm."""
        assert self._channel is not None
        if not bodies:
            return
        if not self._declared:
            await declare_topology(self._channel, self._settings)
            self._declared = True
        exchange, queue = self._channel.default_exchange, self._settings.pages_queue
        await asyncio.gather(
            *(exchange.publish(page_message(body), routing_key=queue) for body in bodies)
        )
