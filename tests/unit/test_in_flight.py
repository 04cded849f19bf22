"""Which contacts are in flight (their leases renewed): claimed until committed, never after."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sender.core.in_flight import InFlight
from sender.core.page import Page
from sender.core.page_handler import HandlerConfig, PageDone, PageHandler
from sender.core.ports import Admission, ContactOutcome, InboxRequest

PAGE = Page.model_validate(
    {
        "campaign_id": "spring-sale",
        "page": 0,
        "inbox_id": "inbox-1",
        "message": {"text": "hi"},
        "contacts": [{"contact_id": f"c-{i}", "to": f"+55{i}"} for i in range(3)],
    }
)


class FakeLedger:
    """Claims every contact of the page."""

    async def admit(self, page: Page, owner: str, lease_s: float) -> Admission:
        return Admission("running", [c.contact_id for c in page.contacts], ())

    async def reclaim(
        self, campaign_id: str, contact_ids: Sequence[str], owner: str, lease_s: float
    ) -> tuple[list[str], list[str]]:
        return [], list(contact_ids)


class GatedSender:
    """Sends once `go` is set; `c-1` crashes when `crash` is True."""

    def __init__(self, crash: bool = False) -> None:
        self.go = asyncio.Event()
        self.started = 0
        self.crash = crash

    async def send(self, request: InboxRequest) -> ContactOutcome:
        self.started += 1
        await self.go.wait()
        if self.crash and request.contact_id == "c-1":
            raise RuntimeError("a bug in the contact loop")
        return ContactOutcome(request.campaign_id, request.contact_id, "sent", attempts=1)


class ManualOutcomes:
    """Outcomes commit only when the test says so."""

    def __init__(self) -> None:
        self.submitted: list[tuple[ContactOutcome, asyncio.Future[None]]] = []
        self.writable = asyncio.Event()
        self.writable.set()

    def submit(self, outcome: ContactOutcome) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submitted.append((outcome, future))
        return future

    def commit_all(self) -> None:
        for _, future in self.submitted:
            if not future.done():
                future.set_result(None)


def _handler(sender: GatedSender, outcomes: ManualOutcomes, in_flight: InFlight) -> PageHandler:
    sender_any: Any = sender
    return PageHandler(
        ledger=FakeLedger(),
        sender=sender_any,
        outcomes=outcomes,
        config=HandlerConfig(owner="me", lease_s=60, deadline_s=60, contacts_per_page=10),
        monotonic=lambda: 0.0,
        shutdown=asyncio.Event(),
        in_flight=in_flight,
    )


async def _until(condition: Any) -> None:
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - in-memory fakes, a few loop turns
            await asyncio.sleep(0)


async def test_claimed_contacts_are_in_flight_until_their_outcome_commits() -> None:
    in_flight, sender, outcomes = InFlight(), GatedSender(), ManualOutcomes()
    handling = asyncio.create_task(_handler(sender, outcomes, in_flight).handle(PAGE))
    await _until(lambda: sender.started == 3)
    during_send = len(in_flight)
    sender.go.set()
    await _until(lambda: len(outcomes.submitted) == 3)
    before_commit = len(in_flight)
    outcomes.commit_all()
    await handling

    assert during_send == 3
    assert before_commit == 3  # sent but not yet written: the lease must hold
    assert len(in_flight) == 0
    assert in_flight.snapshot() == ([], [])


async def test_a_contact_whose_loop_raises_is_released_pending_and_leaves_the_registry() -> None:
    in_flight, sender, outcomes = InFlight(), GatedSender(crash=True), ManualOutcomes()
    handling = asyncio.create_task(_handler(sender, outcomes, in_flight).handle(PAGE))
    await _until(lambda: sender.started == 3)
    sender.go.set()
    await _until(lambda: len(outcomes.submitted) == 3)
    outcomes.commit_all()
    result = await handling  # the page is acked; the crashed contact waits for `resume`

    assert result == PageDone()

    crashed = [o for o, _ in outcomes.submitted if o.contact_id == "c-1"]
    assert crashed == [ContactOutcome("spring-sale", "c-1", "pending", release="crashed")]
    assert len(in_flight) == 0


def test_a_contact_held_twice_stays_until_both_holders_are_done() -> None:
    in_flight = InFlight()
    in_flight.add("k", ["c-1"])
    in_flight.add("k", ["c-1", "c-2"])
    in_flight.discard("k", "c-1")

    assert ("k", "c-1") in in_flight
    in_flight.discard("k", "c-1")
    assert in_flight.snapshot() == (["k"], ["c-2"])
