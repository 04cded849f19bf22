"""The worker a team would hand-roll with Dramatiq: one message per contact, POST with httpx.

`make bench` enqueues the messages, then runs `dramatiq tests.benchmarks.dramatiq_worker`
with several processes and threads against the same fake inbox as `sender`.
"""

from __future__ import annotations

import os
import threading

import dramatiq
import httpx
from dramatiq.brokers.rabbitmq import RabbitmqBroker

QUEUE = os.environ.get("BENCH_DRAMATIQ_QUEUE", "bench-dramatiq")
INBOX_URL = os.environ.get("BENCH_INBOX_URL", "http://127.0.0.1:8080/inboxes/inbox-1/messages")

dramatiq.set_broker(
    RabbitmqBroker(url=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
)
_local = threading.local()


def _client() -> httpx.Client:
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=10)
    return client


@dramatiq.actor(queue_name=QUEUE, max_retries=3)
def post_contact(index: int) -> None:
    """POST one contact; a non-2xx raises, so Dramatiq retries it."""
    body = {
        "campaign_id": "bench",
        "contact_id": f"c-{index}",
        "inbox_id": "inbox-1",
        "to": f"+5511{index:09d}",
        "message": {"text": "hi"},
        "variables": {},
    }
    response = _client().post(INBOX_URL, json=body, headers={"Idempotency-Key": f"bench:c-{index}"})
    response.raise_for_status()
