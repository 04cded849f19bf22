"""The dead queue: list what is in it and replay pages back to the pages queue."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from sender.adapters.amqp_topology import (
    DEAD_REASON_HEADER,
    dead_queue_name,
    declare_topology,
    page_message,
)
from sender.settings import Settings


@dataclass(frozen=True, slots=True)
class DeadPage:
    """One dead-lettered page, as `sender dead list` shows it."""

    id: str
    reason: str
    campaign_id: str | None
    page: int | None
    size_bytes: int


def dead_page_id(message: AbstractIncomingMessage) -> str:
    """A stable id: the message id if the publisher set one, else a hash of the body."""
    return message.message_id or hashlib.sha256(message.body).hexdigest()[:16]


def describe(message: AbstractIncomingMessage) -> DeadPage:
    """What an operator needs to know about one dead message."""
    headers = message.headers or {}
    reason = headers.get(DEAD_REASON_HEADER)
    if reason is None:  # dead-lettered by RabbitMQ itself (delivery limit reached)
        reason = (
            "delivery_limit" if "x-delivery-count" in headers or "x-death" in headers else "unknown"
        )
    campaign_id, page = None, None
    try:
        body = orjson.loads(message.body)
        if isinstance(body, dict):
            campaign_id = (
                body.get("campaign_id") if isinstance(body.get("campaign_id"), str) else None
            )
            page = body.get("page") if isinstance(body.get("page"), int) else None
    except orjson.JSONDecodeError:
        pass
    return DeadPage(dead_page_id(message), str(reason), campaign_id, page, len(message.body))


class DeadLetters:
    """Reads and replays the dead queue over one confirmed channel."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def list_pages(self) -> list[DeadPage]:
        """Every dead page, oldest first; nothing is removed."""
        return await self._walk(replay=frozenset(), replay_all=False)

    async def replay(self, ids: frozenset[str], replay_all: bool = False) -> list[DeadPage]:
        """Publish the chosen dead pages back to the pages queue; return those replayed."""
        return await self._walk(replay=ids, replay_all=replay_all)

    async def _walk(self, replay: frozenset[str], replay_all: bool) -> list[DeadPage]:
        connection = await aio_pika.connect(self._settings.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await declare_topology(channel, self._settings)
            queue = await channel.get_queue(dead_queue_name(self._settings.pages_queue))
            chosen: list[DeadPage] = []
            listing: list[DeadPage] = []
            while (message := await queue.get(fail=False)) is not None:
                info = describe(message)
                listing.append(info)
                if replay_all or info.id in replay:
                    await channel.default_exchange.publish(
                        page_message(message.body), routing_key=self._settings.pages_queue
                    )
                    await message.ack()
                    chosen.append(info)
            # Every message not replayed is still unacked: closing returns it to the queue.
            await channel.close()
        finally:
            await connection.close()
        return chosen if (replay or replay_all) else listing
