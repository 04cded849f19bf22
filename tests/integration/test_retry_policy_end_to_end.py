"""DESIGN §3-§4 end to end: real RabbitMQ and PostgreSQL, the fake inbox over real HTTP.

Each dispatch test runs on both HTTP transports (`HTTP_TRANSPORT=aiohttp|httpx`).
"""

from __future__ import annotations

import itertools
import time

import asyncpg

from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.integration.conftest import World
from tests.integration.support import contact_rows, make_page, running_consumer


async def _send_one(world: World, settings: Settings) -> tuple[asyncpg.Record, dict[str, float]]:
    """Publish a one-contact page, wait for it to settle; return the row and some metrics."""
    async with running_consumer(settings) as app:
        await world.publish(make_page(world.names.campaign, 1))
        await app.wait_settled(1)
        m = app.metrics
        figures = {
            "exhausted": m.value(
                "sender_dispatch_terminal_failures_total", reason="exhausted_retries"
            ),
            "http_4xx": m.value("sender_dispatch_terminal_failures_total", reason="http_4xx"),
            "retry1": m.value("sender_dispatch_retries_total", attempt="1"),
            "sent": m.value("sender_contacts_total", outcome="sent"),
            "failed": m.value("sender_contacts_total", outcome="failed"),
        }
    rows = await contact_rows(world.pool, world.names.campaign)
    return rows["c-0000"], figures


def _gaps(inbox: FakeInbox) -> list[float]:
    times = [r.received_at for r in inbox.requests_for("c-0000")]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_503_every_time_fails_after_four_attempts_with_doubling_gaps(
    world: World,
    transport: str,
) -> None:
    world.inbox.script("c-0000", *[Step(503)] * 4)
    settings = world.settings(
        http_transport=transport, dispatch_retry_count=3, dispatch_backoff_base_ms=200
    )
    row, figures = await _send_one(world, settings)

    assert len(world.inbox.requests_for("c-0000")) == 4
    for gap, expected in zip(_gaps(world.inbox), (0.2, 0.4, 0.8), strict=True):
        assert expected - 0.02 <= gap <= expected + 0.15
    assert row["status"] == "failed"
    assert row["reason"] == 'dispatch_exhausted_retries: ["503","503","503","503"]'
    assert row["attempts"] == 4
    assert row["last_status_code"] == 503
    assert figures["exhausted"] == 1
    assert figures["failed"] == 1


async def test_400_fails_at_once_with_http_4xx_reason(world: World, transport: str) -> None:
    world.inbox.script("c-0000", Step(400))
    row, figures = await _send_one(world, world.settings(http_transport=transport))

    assert len(world.inbox.requests_for("c-0000")) == 1
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "http_4xx: 400", 1)
    assert figures["http_4xx"] == 1


async def test_429_fails_fast_when_no_4xx_is_retryable(world: World) -> None:
    world.inbox.script("c-0000", Step(429), Step(200))
    settings = world.settings(dispatch_retryable_4xx="")
    row, _ = await _send_one(world, settings)

    assert len(world.inbox.requests_for("c-0000")) == 1
    assert (row["status"], row["reason"]) == ("failed", "http_4xx: 429")


async def test_429_with_retry_after_then_200_is_sent_after_the_wait(
    world: World,
    transport: str,
) -> None:
    world.inbox.script("c-0000", Step(429, retry_after="1"), Step(200))
    settings = world.settings(http_transport=transport, dispatch_backoff_base_ms=50)
    row, _ = await _send_one(world, settings)

    assert row["status"] == "sent"
    (gap,) = _gaps(world.inbox)
    assert 1.0 - 0.02 <= gap <= 1.0 + 0.2


async def test_503_then_200_is_sent_with_the_same_idempotency_key(
    world: World,
    transport: str,
) -> None:
    world.inbox.script("c-0000", Step(503), Step(200))
    row, figures = await _send_one(world, world.settings(http_transport=transport))

    requests = world.inbox.requests_for("c-0000")
    assert len(requests) == 2
    assert {r.idempotency_key for r in requests} == {f"{world.names.campaign}:c-0000"}
    assert (row["status"], row["attempts"], row["reason"]) == ("sent", 2, None)
    assert figures["retry1"] == 1
    assert figures["sent"] == 1


async def test_two_retries_with_base_500_fail_after_about_one_and_a_half_seconds(
    world: World,
) -> None:
    world.inbox.script("c-0000", *[Step(503)] * 3)
    settings = world.settings(dispatch_retry_count=2, dispatch_backoff_base_ms=500)
    row, _ = await _send_one(world, settings)

    requests = world.inbox.requests_for("c-0000")
    assert len(requests) == 3
    elapsed = requests[-1].received_at - requests[0].received_at
    assert 1.5 - 0.03 <= elapsed <= 1.5 + 0.25
    assert row["reason"] == 'dispatch_exhausted_retries: ["503","503","503"]'


async def test_retry_count_zero_makes_one_attempt(world: World) -> None:
    world.inbox.script("c-0000", Step(503), Step(200))
    row, figures = await _send_one(world, world.settings(dispatch_retry_count=0))

    assert len(world.inbox.requests_for("c-0000")) == 1
    assert row["reason"] == 'dispatch_exhausted_retries: ["503"]'
    assert figures["retry1"] == 0


async def test_mixed_failures_are_listed_in_order(world: World, transport: str) -> None:
    world.inbox.script("c-0000", Step(503), Step(action="reset"), Step(504), Step(action="hang"))
    settings = world.settings(
        http_transport=transport, dispatch_retry_count=3, dispatch_timeout_ms=300
    )
    started = time.monotonic()
    row, _ = await _send_one(world, settings)

    assert row["reason"] == 'dispatch_exhausted_retries: ["503","DISPATCH_ERROR","504","TIMEOUT"]'
    assert row["last_status_code"] == 504
    assert time.monotonic() - started < 5
