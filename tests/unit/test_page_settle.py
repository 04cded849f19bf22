"""Spec of how a delivery is settled (DESIGN.md §2, §4): one pure decision, then its effect.

The decision is `settle_action(result)`; the consumer carries it out on a fake message
with a recording publish, so no broker is needed.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.common import FieldTable

from sender.adapters.amqp_topology import DEAD_REASON_HEADER
from sender.adapters.page_consumer import (
    Ack,
    DeadLetter,
    PageConsumer,
    Republish,
    Requeue,
    SettleAction,
    dead_letter_headers,
    settle_action,
)
from sender.core.events import Event, EventBus, PageSettled
from sender.core.page import Contact, Page
from sender.core.page_handler import PageContinues, PageCrashed, PageDead, PageDone, PageResult
from sender.runtime.metrics import Metrics
from sender.settings import Settings

PAGES = "campaign.pages"
DEAD = "campaign.pages.dead"


def make_page(*contact_ids: str) -> Page:
    return Page(
        campaign_id="spring-sale",
        page=3,
        inbox_id="inbox-42",
        message={"text": "Hi"},
        contacts=[Contact(contact_id=cid, to="+5511999990001") for cid in contact_ids],
    )


REST = make_page("c2", "c3")


# --- the decision ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "action"),
    [
        (PageDone(), Ack()),
        (PageContinues(REST), Republish(REST)),
        (PageCrashed(), Requeue()),
        (PageDead("malformed_json"), DeadLetter("malformed_json")),
    ],
)
def test_each_page_result_has_one_settle_action(result: PageResult, action: SettleAction) -> None:
    assert settle_action(result) == action


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (PageDone(), "acked"),
        (PageContinues(REST), "requeued"),
        (PageCrashed(), "requeued"),
        (PageDead("too_large"), "dead"),
    ],
)
def test_each_action_is_counted_as_acked_requeued_or_dead(result: PageResult, outcome: str) -> None:
    assert settle_action(result).outcome == outcome


def test_a_continuation_carries_exactly_the_rest_of_the_page() -> None:
    action = settle_action(PageContinues(REST))

    assert isinstance(action, Republish)
    assert [c.contact_id for c in action.rest.contacts] == ["c2", "c3"]


def test_the_dead_letter_header_carries_the_reason_and_keeps_the_delivery_headers() -> None:
    headers = dead_letter_headers({"x-trace": "t-1"}, "invalid_page: page: bad")

    assert headers == {"x-trace": "t-1", DEAD_REASON_HEADER: "invalid_page: page: bad"}
    assert DEAD_REASON_HEADER == "x-sender-dead-reason"


def test_a_delivery_without_headers_gets_only_the_reason() -> None:
    assert dead_letter_headers(None, "too_large") == {DEAD_REASON_HEADER: "too_large"}


def test_a_redelivered_dead_reason_is_replaced_not_kept() -> None:
    headers = dead_letter_headers({DEAD_REASON_HEADER: "old"}, "malformed_json")

    assert headers == {DEAD_REASON_HEADER: "malformed_json"}


# --- carrying it out -------------------------------------------------------------------------


class FakeMessage:
    """The parts of an incoming delivery the consumer settles with."""

    def __init__(
        self, timeline: list[str], body: bytes = b"{}", headers: FieldTable | None = None
    ) -> None:
        self.body = body
        self.headers = headers
        self._timeline = timeline
        self.fail_with: Exception | None = None

    async def ack(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self._timeline.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self._timeline.append(f"nack requeue={requeue}")


class RecordingConsumer(PageConsumer):
    """A consumer whose publishes are recorded instead of sent."""

    def __init__(self, timeline: list[str], events: list[Event], handle: Any = None) -> None:
        super().__init__(
            Settings(pages_queue=PAGES),
            handle or _never_called,
            EventBus([events.append]),
            crash_requeue_delay_s=0.0,
        )
        self.timeline = timeline
        self.published: list[tuple[bytes, str, FieldTable | None]] = []

    async def publish(
        self, body: bytes, routing_key: str, headers: FieldTable | None = None
    ) -> None:
        self.published.append((body, routing_key, headers))
        self.timeline.append(f"publish {routing_key}")


async def _never_called(page: Page) -> PageResult:
    raise AssertionError("the handler was called")


class Rig:
    def __init__(
        self, handle: Any = None, headers: FieldTable | None = None, body: bytes = b"{}"
    ) -> None:
        self.timeline: list[str] = []
        self.events: list[Event] = []
        self.consumer = RecordingConsumer(self.timeline, self.events, handle)
        self.message = FakeMessage(self.timeline, body, headers)

    async def settle(self, result: PageResult) -> None:
        await self.consumer._settle(cast(AbstractIncomingMessage, self.message), result)

    async def process(self) -> None:
        await self.consumer._process(cast(AbstractIncomingMessage, self.message))


async def test_a_done_page_is_acked_and_counted_acked() -> None:
    rig = Rig()

    await rig.settle(PageDone())

    assert rig.timeline == ["ack"]
    assert rig.events == [PageSettled("acked")]


async def test_a_continuation_is_published_before_the_original_is_acked() -> None:
    rig = Rig()

    await rig.settle(PageContinues(REST))

    assert rig.timeline == [f"publish {PAGES}", "ack"]
    assert rig.consumer.published == [(REST.to_json(), PAGES, None)]
    assert rig.events == [PageSettled("requeued")]


async def test_a_crashed_page_is_nacked_back_to_the_queue() -> None:
    rig = Rig()

    await rig.settle(PageCrashed())

    assert rig.timeline == ["nack requeue=True"]
    assert rig.events == [PageSettled("requeued")]


async def test_a_dead_page_goes_to_the_dead_queue_with_its_reason_then_is_acked() -> None:
    rig = Rig(headers={"x-trace": "t-1"}, body=b"not json")

    await rig.settle(PageDead("malformed_json"))

    assert rig.timeline == [f"publish {DEAD}", "ack"]
    assert rig.consumer.published == [
        (b"not json", DEAD, {"x-trace": "t-1", DEAD_REASON_HEADER: "malformed_json"})
    ]
    assert rig.events == [PageSettled("dead")]


async def test_a_delivery_the_broker_cannot_settle_is_not_counted_but_still_done_with() -> None:
    rig = Rig()
    rig.message.fail_with = ChannelInvalidStateError("channel closed")

    await rig.settle(PageDone())
    await rig.consumer.wait_settled(1)  # the drain and tests see it as handled

    assert rig.events == []


async def test_an_undecodable_delivery_is_dead_lettered_without_reaching_the_handler() -> None:
    rig = Rig(body=b"{not json")

    await rig.process()

    assert rig.consumer.published == [(b"{not json", DEAD, {DEAD_REASON_HEADER: "malformed_json"})]
    assert rig.events == [PageSettled("dead")]


async def test_a_handler_that_raises_gives_the_page_back() -> None:
    async def crash(page: Page) -> PageResult:
        raise RuntimeError("bug")

    rig = Rig(handle=crash, body=make_page("c1").to_json())

    await rig.process()

    assert rig.timeline == ["nack requeue=True"]
    assert rig.events == [PageSettled("requeued")]


async def test_the_handler_gets_the_decoded_page() -> None:
    seen: list[Page] = []

    async def handle(page: Page) -> PageResult:
        seen.append(page)
        return PageDone()

    rig = Rig(handle=handle, body=orjson.dumps(make_page("c1").model_dump(mode="json")))

    await rig.process()

    assert seen == [make_page("c1")]
    assert rig.timeline == ["ack"]


# --- metrics subscribe -----------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["acked", "requeued", "dead"])
def test_metrics_count_each_settled_page_by_outcome(outcome: Any) -> None:
    metrics = Metrics("consumer")

    EventBus([metrics.observe]).emit(PageSettled(outcome))

    assert metrics.value("sender_pages_total", outcome=outcome) == 1
    others = {"acked", "requeued", "dead"} - {outcome}
    assert all(metrics.value("sender_pages_total", outcome=o) == 0 for o in others)
