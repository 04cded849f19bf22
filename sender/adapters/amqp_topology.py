"""RabbitMQ topology shared by the consumer, the publisher, dead letters and the demo.

The pages queue is a durable quorum queue with a delivery limit and a dead-letter route
to `<queue>.dead` (DESIGN.md §2); pages are persistent JSON through the default exchange.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.common import FieldTable
from yarl import URL

from sender.errors import QueueMismatch
from sender.settings import Settings

DEAD_REASON_HEADER = "x-sender-dead-reason"


# aiormq's default heartbeat is 60 s with three missed beats allowed: a partitioned broker
# would go unnoticed for three minutes. 10 s (30 s to notice) unless AMQP_URL says otherwise.
DEFAULT_HEARTBEAT_S = 10


def broker_url(amqp_url: str) -> str:
    """`AMQP_URL` with a heartbeat, so a silent broker is detected by timeouts."""
    url = URL(amqp_url)
    if "heartbeat" in url.query:
        return amqp_url
    return str(url.update_query(heartbeat=DEFAULT_HEARTBEAT_S))


def dead_queue_name(queue: str) -> str:
    """Where dead pages of `queue` go."""
    return f"{queue}.dead"


def queue_arguments(settings: Settings) -> FieldTable:
    """Arguments of the pages queue: quorum, delivery limit, dead-letter route."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.page_delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_queue_name(settings.pages_queue),
    }


async def declare_topology(
    channel: aio_pika.abc.AbstractChannel, settings: Settings
) -> AbstractQueue:
    """Declare the dead queue and the pages queue (idempotent); return the pages queue.

    A queue of the same name declared otherwise (a classic queue, another delivery limit)
    raises `QueueMismatch`: a misconfiguration, not an outage.
    """
    dead = dead_queue_name(settings.pages_queue)
    await _declare(channel, dead, {"x-queue-type": "quorum"})
    return await _declare(channel, settings.pages_queue, queue_arguments(settings))


async def _declare(
    channel: aio_pika.abc.AbstractChannel, name: str, arguments: FieldTable
) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as error:
        raise QueueMismatch(name, str(error)) from error


async def delete_topology(amqp_url: str, queue: str) -> None:
    """Delete a pages queue and its dead queue (the demo's and the tests' clean-up)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in (queue, dead_queue_name(queue)):
            await channel.queue_delete(name)
    finally:
        await connection.close()


def page_message(body: bytes, headers: FieldTable | None = None) -> aio_pika.Message:
    """A persistent JSON message, as publishers must send pages."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers or {},
    )
