"""The RabbitMQ consumer (aio-pika): bounded prefetch, and page result -> ack / dead-letter.

How a delivery is settled is decided in exactly one place, the pure `settle_action`,
from the handler's `PageResult`; `_apply` only carries the action out. Pages are never
nack-requeued in a loop: leftovers go out as a continuation page (published with
confirms) before the original is acked.

A server-side cancel (the queue deleted under us) drops the consumer tag from the live
AMQP channel: the consumer is then not `ready` (so `/readyz` fails) while aio-pika's
robust queue re-declares the queue and subscribes again; if that never succeeds, the
broker watchdog of `ConsumerApp` makes the process exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, assert_never

import aio_pika
import aiormq
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
from sender.core.events import EventBus, PageOutcome, PageSettled
from sender.core.page import Page, bounded_reason, decode_page
from sender.core.page_handler import PageContinues, PageCrashed, PageDead, PageDone, PageResult
from sender.errors import InvalidPage, PageRefused
from sender.settings import Settings

log = logging.getLogger(__name__)

CRASH_REQUEUE_DELAY_S = 1.0
_BROKER_CALL_TIMEOUT_S = 5.0

HandlePage = Callable[[Page], Awaitable[PageResult]]


@dataclass(frozen=True, slots=True)
class Ack:
    """Every contact's outcome is committed: ack the delivery."""

    outcome: ClassVar[PageOutcome] = "acked"


_BACKLOG_TIMEOUT_S = 1.0  # a slow broker answer: the page yields, as if pages waited


@dataclass(frozen=True, slots=True)
class Republish:
    """Publish `rest` as a continuation page (confirmed), then ack the delivery."""

    rest: Page
    outcome: ClassVar[PageOutcome] = "requeued"


@dataclass(frozen=True, slots=True)
class Requeue:
    """After a short pause, nack with requeue: RabbitMQ counts it toward the delivery limit."""

    outcome: ClassVar[PageOutcome] = "requeued"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Publish the delivery to the dead queue with `reason` in its header, then ack it."""

    reason: str
    outcome: ClassVar[PageOutcome] = "dead"


SettleAction = Ack | Republish | Requeue | DeadLetter


def settle_action(result: PageResult) -> SettleAction:
    """How a delivery whose handling came to `result` is settled."""
    match result:
        case PageDone():
            return Ack()
        case PageContinues(rest=rest):
            return Republish(rest)
        case PageCrashed():
            return Requeue()
        case PageDead(reason=reason):
            return DeadLetter(bounded_reason(reason))
        case unexpected:
            assert_never(unexpected)


def dead_letter_headers(headers: FieldTable | None, reason: str) -> FieldTable:
    """The delivery's own headers plus the dead-letter reason."""
    return {**(headers or {}), DEAD_REASON_HEADER: reason}


class PageConsumer:
    """Consumes pages with bounded prefetch and settles each from its result."""

    def __init__(
        self,
        settings: Settings,
        handle: HandlePage,
        events: EventBus,
        *,
        crash_requeue_delay_s: float = CRASH_REQUEUE_DELAY_S,
    ) -> None:
        self._settings = settings
        self.handle_page = handle
        self._events = events
        self._crash_requeue_delay_s = crash_requeue_delay_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._amqp: aiormq.Channel | None = None  # the live AMQP channel under aio-pika
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled = 0
        self._settled_changed = asyncio.Condition()

    async def pages_waiting(self) -> bool:
        """Whether pages wait in the queue, not yet delivered (one passive declare)."""
        amqp = self._amqp
        if amqp is None:
            return True
        async with asyncio.timeout(_BACKLOG_TIMEOUT_S):
            declared = await amqp.queue_declare(self._settings.pages_queue, passive=True)
        return declared.message_count is None or declared.message_count > 0

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
        await self._follow_channel(channel)
        channel.reopen_callbacks.add(self._follow_channel)
        log.info("consuming", extra={"queue": s.pages_queue, "prefetch": s.prefetch_pages})

    @property
    def ready(self) -> bool:
        """Connected and consuming: the broker still delivers to our consumer tag."""
        connection = self._connection
        amqp = self._amqp
        return (
            connection is not None
            and not connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
            and self._consumer_tag is not None
            and amqp is not None
            and not amqp.is_closed
            and self._consumer_tag in amqp.consumers
        )

    async def _follow_channel(self, channel: AbstractRobustChannel | None, /) -> None:
        """Watch the AMQP channel aio-pika opened (again, after a reconnect) for cancels."""
        channel = channel or self._channel
        if channel is None:
            return
        amqp = await channel.get_underlay_channel()
        assert isinstance(amqp, aiormq.Channel)
        amqp.on_consumer_cancel_callbacks.add(self._on_cancelled)
        self._amqp = amqp

    def _on_cancelled(self, frame: aiormq.spec.Basic.Cancel) -> None:
        if frame.consumer_tag == self._consumer_tag:
            log.error(
                "consumer cancelled by the broker (queue deleted?); not ready until"
                " it is declared and subscribed again",
                extra={"queue": self._settings.pages_queue},
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
            await self._apply(message, settle_action(result))
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            # The channel died with the connection: the broker returns the page to the
            # queue by itself, and the ledger skips what this delivery finished.
            log.warning(
                "page not settled; the broker will redeliver it", extra={"error": str(error)}
            )
        async with self._settled_changed:
            self._settled += 1
            self._settled_changed.notify_all()

    async def _apply(self, message: AbstractIncomingMessage, action: SettleAction) -> None:
        match action:
            case Ack():
                await message.ack()
            case Republish(rest=rest):
                await self.publish(rest.to_json(), self._settings.pages_queue)
                await message.ack()
            case Requeue():
                # A short pause so a page that always crashes does not spin hot to its limit.
                await asyncio.sleep(self._crash_requeue_delay_s)
                await message.nack(requeue=True)
            case DeadLetter(reason=reason):
                headers = dead_letter_headers(message.headers, reason)
                await self.publish(
                    message.body, dead_queue_name(self._settings.pages_queue), headers
                )
                await message.ack()
                log.warning("page dead-lettered", extra={"reason": reason})
            case unexpected:
                assert_never(unexpected)
        self._events.emit(PageSettled(action.outcome))

    async def publish(
        self, body: bytes, routing_key: str, headers: FieldTable | None = None
    ) -> None:
        """Publish persistently through the default exchange and wait for the confirm."""
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            page_message(body, headers), routing_key=routing_key
        )
