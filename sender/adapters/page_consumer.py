"""The RabbitMQ consumer (aio-pika): bounded prefetch, and page result -> ack / dead-letter.

How a delivery is settled is decided in exactly one place, `_settle`, from the
handler's `PageResult`. Pages are never nack-requeued in a loop: leftovers go out as a
continuation page (published with confirms) before the original is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pamqp.common import FieldTable

from sender.adapters.amqp_topology import (
    DEAD_REASON_HEADER,
    broker_url,
    dead_queue_name,
    declare_topology,
    page_message,
)
from sender.core.page import Page, bounded_reason, decode_page
from sender.core.page_handler import PageContinues, PageCrashed, PageDead, PageDone, PageResult
from sender.errors import InvalidPage, PageRefused
from sender.runtime.metrics import Metrics
from sender.settings import Settings

log = logging.getLogger(__name__)

CRASH_REQUEUE_DELAY_S = 1.0
_BROKER_CALL_TIMEOUT_S = 5.0

HandlePage = Callable[[Page], Awaitable[PageResult]]


class PageConsumer:
    """Consumes pages with bounded prefetch and settles each from its result."""

    def __init__(self, settings: Settings, handle: HandlePage, metrics: Metrics) -> None:
        self._settings = settings
        self.handle_page = handle
        self._metrics = metrics
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled = 0
        self._settled_changed = asyncio.Condition()

    async def start(self) -> None:
        """Connect, declare the queues and start consuming."""
        s = self._settings
        self._connection = await aio_pika.connect_robust(broker_url(s.amqp_url))
        channel = await self._connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await channel.set_qos(prefetch_count=s.prefetch_pages)
        self._queue = await declare_topology(channel, s)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming", extra={"queue": s.pages_queue, "prefetch": s.prefetch_pages})

    @property
    def ready(self) -> bool:
        """Connected and consuming."""
        connection = self._connection
        return (
            connection is not None
            and not connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
            and self._consumer_tag is not None
        )

    async def wait_settled(self, count: int) -> None:
        """Wait until at least `count` deliveries have been settled (for tests and the demo)."""
        async with self._settled_changed:
            await self._settled_changed.wait_for(lambda: self._settled >= count)

    async def stop_consuming(self) -> None:
        """Stop taking new pages; pages already received keep running."""
        if self._queue is not None and self._consumer_tag is not None:
            # A dead connection may never answer: the broker drops the consumer anyway.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_BROKER_CALL_TIMEOUT_S):
                    await self._queue.cancel(self._consumer_tag)
        self._consumer_tag = None

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for pages in progress; cancel the rest and return how many."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        leftover = list(self._tasks)
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover)
        return len(leftover)

    async def close(self) -> None:
        """Close the broker connection (unacked pages go back to the queue)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_BROKER_CALL_TIMEOUT_S):
                    await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        s = self._settings
        try:
            page = decode_page(
                message.body, max_bytes=s.max_page_bytes, max_contacts=s.max_page_contacts
            )
        except InvalidPage as invalid:
            await self._settle(message, PageDead(invalid.reason))
            return
        try:
            result = await self.handle_page(page)
        except asyncio.CancelledError:
            raise
        except PageRefused as refused:  # what it holds, not an outage: never redeliver it
            result = PageDead(refused.reason)
        except Exception:
            log.exception(
                "page handler crashed; page goes back to the queue",
                extra={"campaign_id": page.campaign_id, "page": page.page},
            )
            result = PageCrashed()
        await self._settle(message, result)

    async def _settle(self, message: AbstractIncomingMessage, result: PageResult) -> None:
        """The one place that acks, republishes or dead-letters a delivery."""
        try:
            await self._apply(message, result)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            # The channel died with the connection: the broker returns the page to the
            # queue by itself, and the ledger skips what this delivery finished.
            log.warning(
                "page not settled; the broker will redeliver it", extra={"error": str(error)}
            )
        async with self._settled_changed:
            self._settled += 1
            self._settled_changed.notify_all()

    async def _apply(self, message: AbstractIncomingMessage, result: PageResult) -> None:
        if isinstance(result, PageDone):
            await message.ack()
            self._metrics.page_settled("acked")
        elif isinstance(result, PageContinues):
            await self.publish(result.rest.to_json(), self._settings.pages_queue)
            await message.ack()
            self._metrics.page_settled("requeued")
        elif isinstance(result, PageCrashed):
            # A short pause so a page that always crashes does not spin hot to its limit.
            await asyncio.sleep(CRASH_REQUEUE_DELAY_S)
            await message.nack(requeue=True)
            self._metrics.page_settled("requeued")
        else:
            reason = bounded_reason(result.reason)
            headers: FieldTable = {**(message.headers or {}), DEAD_REASON_HEADER: reason}
            await self.publish(message.body, dead_queue_name(self._settings.pages_queue), headers)
            await message.ack()
            self._metrics.page_settled("dead")
            log.warning("page dead-lettered", extra={"reason": reason})

    async def publish(
        self, body: bytes, routing_key: str, headers: FieldTable | None = None
    ) -> None:
        """Publish persistently through the default exchange and wait for the confirm."""
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            page_message(body, headers), routing_key=routing_key
        )
