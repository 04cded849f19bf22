"""Spec of page handling (DESIGN.md §4, §5) over fake ports: no sockets, no timed sleeps.

The handler's clock is a manual one; its naps (held-lease polls, ledger-down backoff)
record what they were asked for and move that clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from sender.core.page import Contact, Page
from sender.core.page_handler import (
    CROWDED_PARK_S,
    HandlerConfig,
    PageContinues,
    PageDone,
    PageHandler,
    PageResult,
)
from sender.core.ports import (
    Admission,
    CampaignStatus,
    ContactOutcome,
    InboxRequest,
    ReleaseCause,
)
from sender.errors import DependencyUnavailable

CAMPAIGN = "spring-sale"
OWNER = "pod-a"
LEASE_S = 30.0
DEADLINE_S = 300.0
HELD_POLL_S = 1.0
PHONE = "+5511999990001"


def make_page(*contact_ids: str) -> Page:
    return Page(
        campaign_id=CAMPAIGN,
        page=3,
        inbox_id="inbox-42",
        message={"text": "Hi {{name}}"},
        contacts=[
            Contact(contact_id=cid, to=PHONE, variables={"name": cid}) for cid in contact_ids
        ],
    )


def sent(contact_id: str) -> ContactOutcome:
    return ContactOutcome.sent(CAMPAIGN, contact_id, attempts=1, last_status_code=200)


def released(contact_id: str, cause: ReleaseCause) -> ContactOutcome:
    return ContactOutcome.released(CAMPAIGN, contact_id, cause)


def by_id(outcomes: Sequence[ContactOutcome]) -> list[ContactOutcome]:
    """Outcomes in contact order (contacts run concurrently and finish in any order)."""
    return sorted(outcomes, key=lambda outcome: outcome.contact_id)


def ids(contacts: Sequence[Contact]) -> list[str]:
    return [contact.contact_id for contact in contacts]


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


DOWN = DependencyUnavailable("postgres", "connection refused")


class FakeLedger:
    """Scripted admissions and reclaims; an exception in a script is raised in turn."""

    def __init__(
        self,
        *admissions: Admission | Exception,
        reclaims: Sequence[tuple[list[str], list[str]]] = (),
    ) -> None:
        self._admissions = list(admissions)
        self._reclaims = list(reclaims)
        self.admits = 0
        self.reclaimed: list[list[str]] = []

    async def admit(self, page: Page, owner: str, lease_s: float) -> Admission:
        assert (owner, lease_s) == (OWNER, LEASE_S)
        self.admits += 1
        answer = self._admissions.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def reclaim(
        self, campaign_id: str, contact_ids: Sequence[str], owner: str, lease_s: float
    ) -> tuple[list[str], list[str]]:
        assert (campaign_id, owner, lease_s) == (CAMPAIGN, OWNER, LEASE_S)
        self.reclaimed.append(list(contact_ids))
        if self._reclaims:
            return self._reclaims.pop(0)
        return [], list(contact_ids)  # still held elsewhere


def running(claimed: Sequence[str], held: Sequence[str] = ()) -> Admission:
    return Admission("running", list(claimed), list(held))


Behaviour = Callable[[InboxRequest], Awaitable[ContactOutcome]]


class FakeSender:
    """Sends each contact after one loop turn, unless `script` says otherwise for its id.

    Records every request and how many contacts ran at once at most.
    """

    def __init__(self, script: dict[str, Behaviour] | None = None) -> None:
        self._script = script or {}
        self.requests: list[InboxRequest] = []
        self.running = 0
        self.peak = 0

    async def send(self, request: InboxRequest) -> ContactOutcome:
        self.requests.append(request)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            behaviour = self._script.get(request.contact_id)
            if behaviour is not None:
                return await behaviour(request)
            await asyncio.sleep(0)  # one loop turn: others may start meanwhile
            return sent(request.contact_id)
        finally:
            self.running -= 1

    @property
    def sent_ids(self) -> list[str]:
        return [request.contact_id for request in self.requests]


class WatchedEvent(asyncio.Event):
    """An event that says when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = asyncio.Event()

    async def wait(self) -> bool:  # type: ignore[override]
        self.waited_on.set()
        return await super().wait()


class FakeOutcomes:
    """Commits each outcome on the next loop turn (or fails it with `failure`)."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.submitted: list[ContactOutcome] = []
        self.commits: list[asyncio.Future[None]] = []
        self._failure = failure
        self._writable = WatchedEvent()
        self._writable.set()

    @property
    def writable(self) -> WatchedEvent:
        return self._writable

    def submit(self, outcome: ContactOutcome) -> asyncio.Future[None]:
        self.submitted.append(outcome)
        commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failure is None:
            asyncio.get_running_loop().call_soon(commit.set_result, None)
        else:
            asyncio.get_running_loop().call_soon(commit.set_exception, self._failure)
        self.commits.append(commit)
        return commit


@dataclass
class Rig:
    """One page handler wired to fakes."""

    ledger: FakeLedger
    sender: FakeSender = field(default_factory=FakeSender)
    outcomes: FakeOutcomes = field(default_factory=FakeOutcomes)
    contacts_per_page: int = 10
    deadline_s: float = DEADLINE_S
    slice_s: float | None = None
    clock: ManualClock = field(default_factory=ManualClock)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    naps: list[float] = field(default_factory=list)
    backlog: list[bool] = field(default_factory=list)  # answers in turn; then True
    # The campaign's contacts queued for tokens at the inbox here (`Crowd`), in turn per
    # call; the last answer stays.
    token_waiters: list[int] = field(default_factory=lambda: [0])

    async def waiting_pages(self) -> bool:
        return self.backlog.pop(0) if self.backlog else True

    def crowd(self, inbox_id: str, campaign_id: str) -> int:
        assert (inbox_id, campaign_id) == ("inbox-42", CAMPAIGN)
        return self.token_waiters.pop(0) if len(self.token_waiters) > 1 else self.token_waiters[0]

    async def nap(self, shutdown: asyncio.Event, seconds: float) -> None:
        assert shutdown is self.shutdown
        self.naps.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    def handler(self) -> PageHandler:
        return PageHandler(
            ledger=self.ledger,
            sender=self.sender,
            outcomes=self.outcomes,
            config=HandlerConfig(
                owner=OWNER,
                lease_s=LEASE_S,
                deadline_s=self.deadline_s,
                contacts_per_page=self.contacts_per_page,
                held_poll_s=HELD_POLL_S,
                slice_s=self.slice_s,
            ),
            monotonic=self.clock,
            shutdown=self.shutdown,
            nap=self.nap,
            backlog=self.waiting_pages,
            crowd=self.crowd,
        )

    async def handle(self, page: Page) -> PageResult:
        async with asyncio.timeout(5):  # a wedged handler fails the test, not the run
            return await self.handler().handle(page)


def rest_ids(result: PageResult) -> list[str]:
    assert isinstance(result, PageContinues), result
    assert (result.rest.campaign_id, result.rest.page) == (CAMPAIGN, 3)
    return ids(result.rest.contacts)


# --- admission -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["paused", "stopped", "completed"])
async def test_a_page_of_a_campaign_that_is_not_running_is_acked_without_dispatch(
    status: CampaignStatus,
) -> None:
    rig = Rig(FakeLedger(Admission(status, (), ())))

    result = await rig.handle(make_page("c1", "c2"))

    assert result == PageDone()
    assert rig.sender.requests == []
    assert rig.outcomes.submitted == []


# --- all sent --------------------------------------------------------------------------------


async def test_a_page_whose_contacts_are_all_sent_is_done_once_their_outcomes_commit() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2", "c3"])))

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert result == PageDone()
    assert rig.outcomes.submitted == [sent("c1"), sent("c2"), sent("c3")]
    assert all(commit.done() for commit in rig.outcomes.commits)


async def test_a_page_is_not_done_while_its_outcomes_fail_to_commit() -> None:
    lost = DependencyUnavailable("postgres", "writer closed")
    rig = Rig(FakeLedger(running(["c1", "c2"])), outcomes=FakeOutcomes(failure=lost))

    with pytest.raises(DependencyUnavailable):  # the consumer gives the page back
        await rig.handle(make_page("c1", "c2"))


async def test_each_contact_is_sent_with_the_page_inbox_message_and_its_own_address() -> None:
    rig = Rig(FakeLedger(running(["c1"])))

    await rig.handle(make_page("c1"))

    assert rig.sender.requests == [
        InboxRequest(CAMPAIGN, "c1", "inbox-42", PHONE, {"text": "Hi {{name}}"}, {"name": "c1"})
    ]


async def test_only_claimed_contacts_are_sent() -> None:
    rig = Rig(FakeLedger(running(["c2"])))  # c1 and c3 already finished

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert result == PageDone()
    assert rig.sender.sent_ids == ["c2"]


# --- deadline and shutdown -------------------------------------------------------------------


async def test_contacts_not_started_by_the_deadline_go_out_in_a_continuation_page() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2", "c3"])), contacts_per_page=1, deadline_s=10.0)

    async def slow(request: InboxRequest) -> ContactOutcome:
        rig.clock.advance(11.0)  # a slow inbox: the deadline passes while c1 is in flight
        return sent(request.contact_id)

    rig.sender = FakeSender({"c1": slow})

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert rest_ids(result) == ["c2", "c3"]
    assert rig.sender.sent_ids == ["c1"]
    assert rig.outcomes.submitted == [
        sent("c1"),
        released("c2", "deadline"),
        released("c3", "deadline"),
    ]


async def test_after_its_slice_a_page_yields_the_contacts_not_started_as_a_continuation() -> None:
    rig = Rig(
        FakeLedger(running(["c1", "c2", "c3"])), contacts_per_page=1, deadline_s=300, slice_s=1.0
    )

    async def past_the_slice(request: InboxRequest) -> ContactOutcome:
        rig.clock.advance(1.5)  # c1's send runs on past the slice; it is not cut
        return sent(request.contact_id)

    rig.sender = FakeSender({"c1": past_the_slice})

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert rest_ids(result) == ["c2", "c3"]
    assert rig.sender.sent_ids == ["c1"]
    assert rig.outcomes.submitted[1:] == [released("c2", "deadline"), released("c3", "deadline")]


async def test_with_no_other_page_waiting_a_page_runs_on_past_its_slice() -> None:
    rig = Rig(
        FakeLedger(running(["c1", "c2", "c3"])), contacts_per_page=1, deadline_s=300, slice_s=1.0
    )
    rig.backlog = [False, False, False]  # at the start, then at each slice's end

    async def past_the_slice(request: InboxRequest) -> ContactOutcome:
        rig.clock.advance(1.5)
        return sent(request.contact_id)

    rig.sender = FakeSender(dict.fromkeys(("c1", "c2", "c3"), past_the_slice))

    assert await rig.handle(make_page("c1", "c2", "c3")) == PageDone()
    assert rig.sender.sent_ids == ["c1", "c2", "c3"]
    assert [request.first_token_by for request in rig.sender.requests] == [None] * 3


async def test_a_page_too_big_to_run_at_once_bounds_first_token_waits_a_slice_past_its_own() -> (
    None
):
    rig = Rig(FakeLedger(running(["c1", "c2", "c3"])), contacts_per_page=2, slice_s=1.0)
    rig.clock.advance(7.0)

    assert await rig.handle(make_page("c1", "c2", "c3")) == PageDone()

    # delivered at 1007: its slice ends at 1008, its first-token waits a slice later
    assert [request.first_token_by for request in rig.sender.requests] == [1009.0] * 3


async def test_a_page_that_runs_at_once_keeps_its_token_waits_past_the_slice() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2"])), contacts_per_page=2, slice_s=1.0)

    assert await rig.handle(make_page("c1", "c2")) == PageDone()

    assert [request.first_token_by for request in rig.sender.requests] == [None, None]


async def test_without_a_slice_a_contacts_first_token_is_bound_only_by_the_max_wait() -> None:
    rig = Rig(FakeLedger(running(["c1"])))

    await rig.handle(make_page("c1"))

    assert [request.first_token_by for request in rig.sender.requests] == [None]


async def test_at_shutdown_contacts_not_started_go_out_in_a_continuation_page() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2", "c3"])), contacts_per_page=1)

    async def last_before_shutdown(request: InboxRequest) -> ContactOutcome:
        rig.shutdown.set()
        return sent(request.contact_id)

    rig.sender = FakeSender({"c1": last_before_shutdown})

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert rest_ids(result) == ["c2", "c3"]
    assert rig.sender.sent_ids == ["c1"]
    assert rig.outcomes.submitted == [
        sent("c1"),
        released("c2", "shutdown"),
        released("c3", "shutdown"),
    ]


@pytest.mark.parametrize("cause", ["no_token", "deadline", "shutdown"])
async def test_contacts_released_for_want_of_time_go_out_again_in_the_continuation_page(
    cause: ReleaseCause,
) -> None:
    async def give_up(request: InboxRequest) -> ContactOutcome:
        return released(request.contact_id, cause)

    rig = Rig(FakeLedger(running(["c1", "c2"])), sender=FakeSender({"c2": give_up}))

    result = await rig.handle(make_page("c1", "c2"))

    assert rest_ids(result) == ["c2"]
    assert by_id(rig.outcomes.submitted) == [sent("c1"), released("c2", cause)]


@pytest.mark.parametrize("cause", ["paused", "stopped", "completed"])
async def test_contacts_released_by_a_halt_wait_for_resume_and_the_page_is_done(
    cause: ReleaseCause,
) -> None:
    async def halted(request: InboxRequest) -> ContactOutcome:
        return released(request.contact_id, cause)

    rig = Rig(FakeLedger(running(["c1", "c2"])), sender=FakeSender({"c2": halted}))

    result = await rig.handle(make_page("c1", "c2"))

    assert result == PageDone()
    assert by_id(rig.outcomes.submitted) == [sent("c1"), released("c2", cause)]


# --- contacts leased by another pod ----------------------------------------------------------


async def test_contacts_leased_by_another_pod_are_polled_until_the_lease_lapses() -> None:
    rig = Rig(
        FakeLedger(
            running(["c1"], held=["c2", "c3"]), reclaims=[([], ["c2", "c3"]), (["c2", "c3"], [])]
        )
    )

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert result == PageDone()
    assert rig.naps == [HELD_POLL_S, HELD_POLL_S]
    assert rig.ledger.reclaimed == [["c2", "c3"], ["c2", "c3"]]
    assert rig.sender.sent_ids == ["c1", "c2", "c3"]


async def test_each_poll_reclaims_only_the_contacts_still_held() -> None:
    rig = Rig(FakeLedger(running([], held=["c1", "c2"]), reclaims=[(["c1"], ["c2"]), (["c2"], [])]))

    result = await rig.handle(make_page("c1", "c2"))

    assert result == PageDone()
    assert rig.ledger.reclaimed == [["c1", "c2"], ["c2"]]
    assert rig.sender.sent_ids == ["c1", "c2"]


async def test_contacts_still_leased_elsewhere_at_the_deadline_go_out_in_a_continuation_page() -> (
    None
):
    rig = Rig(FakeLedger(running(["c1"], held=["c2"])), deadline_s=2.5)

    result = await rig.handle(make_page("c1", "c2"))

    assert rest_ids(result) == ["c2"]
    assert rig.naps == [1.0, 1.0, 0.5]  # the last poll ends at the deadline
    assert len(rig.ledger.reclaimed) == 3
    assert rig.outcomes.submitted == [sent("c1")]  # c2 is not ours to release


async def test_polling_for_leases_stops_at_shutdown() -> None:
    rig = Rig(FakeLedger(running([], held=["c1"])))

    async def nap_into_shutdown(shutdown: asyncio.Event, seconds: float) -> None:
        rig.naps.append(seconds)
        shutdown.set()

    rig.nap = nap_into_shutdown  # type: ignore[method-assign]

    result = await rig.handle(make_page("c1"))

    assert rest_ids(result) == ["c1"]
    assert rig.naps == [HELD_POLL_S]


# --- ledger down -----------------------------------------------------------------------------


async def test_the_page_is_held_while_the_ledger_is_down_not_given_back() -> None:
    rig = Rig(FakeLedger(DOWN, DOWN, DOWN, running(["c1"])))

    result = await rig.handle(make_page("c1"))

    assert result == PageDone()
    assert rig.ledger.admits == 4
    assert rig.naps == [0.2, 0.4, 0.8]
    assert rig.sender.sent_ids == ["c1"]


async def test_holding_the_page_backs_off_up_to_five_seconds() -> None:
    rig = Rig(FakeLedger(*[DOWN] * 7, running(["c1"])))

    await rig.handle(make_page("c1"))

    assert rig.naps == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_a_reclaim_while_the_ledger_is_down_is_retried_too() -> None:
    class FlakyReclaim(FakeLedger):
        async def reclaim(
            self, campaign_id: str, contact_ids: Sequence[str], owner: str, lease_s: float
        ) -> tuple[list[str], list[str]]:
            if not self.reclaimed:
                self.reclaimed.append([])
                raise DOWN
            return await super().reclaim(campaign_id, contact_ids, owner, lease_s)

    rig = Rig(FlakyReclaim(running([], held=["c1"]), reclaims=[(["c1"], [])]))

    result = await rig.handle(make_page("c1"))

    assert result == PageDone()
    assert rig.naps == [HELD_POLL_S, 0.2]
    assert rig.sender.sent_ids == ["c1"]


async def test_a_ledger_outage_at_shutdown_gives_the_page_back() -> None:
    rig = Rig(FakeLedger(DOWN, running(["c1"])))
    rig.shutdown.set()

    with pytest.raises(DependencyUnavailable):
        await rig.handle(make_page("c1"))

    assert rig.naps == []
    assert rig.sender.requests == []


# --- outcomes not writable -------------------------------------------------------------------


async def test_new_sends_wait_while_outcomes_cannot_be_written() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2"])))
    rig.outcomes.writable.clear()
    handling = asyncio.create_task(rig.handle(make_page("c1", "c2")))

    await rig.outcomes.writable.waited_on.wait()
    assert rig.sender.requests == []
    rig.outcomes.writable.set()  # the ledger is back
    result = await handling

    assert result == PageDone()
    assert rig.sender.sent_ids == ["c1", "c2"]


class CountedWaits(WatchedEvent):
    """A watched event that also counts how often someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self.waited_twice = asyncio.Event()

    async def wait(self) -> bool:  # type: ignore[override]
        self.waits += 1
        if self.waits >= 2:
            self.waited_twice.set()
        return await super().wait()


async def test_a_wait_for_the_ledger_outlasting_a_slice_still_sends_nothing_new() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2"])), slice_s=0.01)
    rig.backlog = [False] * 1000  # no other page waits: the page keeps its slices
    rig.outcomes._writable = CountedWaits()
    rig.outcomes.writable.clear()
    handling = asyncio.create_task(rig.handle(make_page("c1", "c2")))

    await rig.outcomes.writable.waited_twice.wait()  # the first wait ran out at the slice
    assert rig.sender.requests == []
    rig.outcomes.writable.set()  # the ledger is back
    result = await handling

    assert result == PageDone()
    assert rig.sender.sent_ids == ["c1", "c2"]


async def test_a_shutdown_while_outcomes_cannot_be_written_sends_nothing_new() -> None:
    rig = Rig(FakeLedger(running(["c1", "c2"])))
    rig.outcomes.writable.clear()
    handling = asyncio.create_task(rig.handle(make_page("c1", "c2")))

    await rig.outcomes.writable.waited_on.wait()
    rig.shutdown.set()
    result = await handling

    assert rest_ids(result) == ["c1", "c2"]
    assert rig.sender.requests == []
    assert rig.outcomes.submitted == [released("c1", "shutdown"), released("c2", "shutdown")]


# --- concurrency budget ----------------------------------------------------------------------


async def test_a_page_runs_at_most_contacts_per_page_contacts_at_once() -> None:
    contact_ids = [f"c{n}" for n in range(7)]
    rig = Rig(FakeLedger(running(contact_ids)), contacts_per_page=2)

    result = await rig.handle(make_page(*contact_ids))

    assert result == PageDone()
    assert rig.sender.peak == 2
    assert sorted(rig.sender.sent_ids) == sorted(contact_ids)


async def test_each_page_has_its_own_budget() -> None:
    rig = Rig(FakeLedger(running(["a1", "a2"]), running(["b1", "b2"])), contacts_per_page=2)
    handler = rig.handler()

    results = await asyncio.gather(
        handler.handle(make_page("a1", "a2")), handler.handle(make_page("b1", "b2"))
    )

    assert list(results) == [PageDone(), PageDone()]
    assert rig.sender.peak == 4


# --- a contact loop that raises --------------------------------------------------------------


async def test_a_contact_whose_loop_raises_is_released_pending_and_the_others_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: InboxRequest) -> ContactOutcome:
        raise RuntimeError(f"unexpected answer for {request.to}")

    rig = Rig(FakeLedger(running(["c1", "c2", "c3"])), sender=FakeSender({"c2": broken}))

    with caplog.at_level(logging.DEBUG, logger="sender.core.page_handler"):
        result = await rig.handle(make_page("c1", "c2", "c3"))

    assert result == PageDone()  # c2 waits for `resume`: sending it again would loop on the bug
    assert by_id(rig.outcomes.submitted) == [
        sent("c1"),
        released("c2", "crashed"),
        sent("c3"),
    ]
    assert all(commit.done() for commit in rig.outcomes.commits)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.contact_id, r.campaign_id) for r in errors] == [("c2", CAMPAIGN)]  # type: ignore[attr-defined]
    above_debug = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert not any(PHONE in caplog.handler.format(r) for r in above_debug)


async def test_a_contact_whose_loop_raises_gives_its_slot_back() -> None:
    async def broken(request: InboxRequest) -> ContactOutcome:
        raise RuntimeError("bug")

    rig = Rig(
        FakeLedger(running(["c1", "c2", "c3"])),
        sender=FakeSender({"c1": broken}),
        contacts_per_page=1,
    )

    result = await rig.handle(make_page("c1", "c2", "c3"))

    assert result == PageDone()
    assert rig.sender.sent_ids == ["c1", "c2", "c3"]


# --- a campaign already crowding the inbox here (§12) ----------------------------------------


async def test_a_page_whose_campaign_already_fills_a_page_of_token_waits_goes_back_untouched() -> (
    None
):
    rig = Rig(FakeLedger(), contacts_per_page=2, slice_s=1.0, token_waiters=[2])
    page = make_page("c1", "c2", "c3")

    result = await rig.handle(page)

    assert result == PageContinues(page)  # the same contacts, to the queue's tail
    assert rig.ledger.admits == 0  # nothing claimed, so nothing to release
    assert rig.sender.requests == []
    assert rig.outcomes.submitted == []
    assert sum(rig.naps) == pytest.approx(CROWDED_PARK_S)


async def test_a_crowd_that_thins_while_the_page_waits_lets_it_run() -> None:
    rig = Rig(FakeLedger(running(["c1"])), contacts_per_page=2, slice_s=1.0)
    rig.token_waiters = [2, 1]  # at delivery, then thinned by the first poll

    assert await rig.handle(make_page("c1")) == PageDone()
    assert rig.sender.sent_ids == ["c1"]
    assert len(rig.naps) == 1


@pytest.mark.parametrize("slice_s", [None, 1.0])
async def test_a_crowded_page_runs_at_once_with_no_slice_or_no_other_page_waiting(
    slice_s: float | None,
) -> None:
    rig = Rig(FakeLedger(running(["c1"])), contacts_per_page=2, slice_s=slice_s)
    rig.token_waiters, rig.backlog = [5], [False] * 10

    assert await rig.handle(make_page("c1")) == PageDone()
    assert rig.sender.sent_ids == ["c1"]
    assert rig.naps == []


class GatedAdmissions(FakeLedger):
    """The first admission waits for `release` (a page being admitted meanwhile)."""

    def __init__(self, *admissions: Admission) -> None:
        super().__init__(*admissions)
        self.release = asyncio.Event()
        self.first_asked = asyncio.Event()

    async def admit(self, page: Page, owner: str, lease_s: float) -> Admission:
        if not self.first_asked.is_set():
            self.first_asked.set()
            await self.release.wait()
        return await super().admit(page, owner, lease_s)


async def test_a_page_delivered_while_another_of_its_campaign_is_admitted_counts_it_as_crowd() -> (
    None
):
    # `crowd` sees only contacts already queued for tokens; a page still being admitted
    # would start a page's worth more, so the next one waits for it like for a crowd.
    ledger = GatedAdmissions(running(["c1", "c2"]), running(["c3"]))
    rig = Rig(ledger, contacts_per_page=2, slice_s=1.0)
    handler = rig.handler()
    first = asyncio.create_task(handler.handle(make_page("c1", "c2")))
    await ledger.first_asked.wait()

    second_page = make_page("c3")
    async with asyncio.timeout(5):
        second = await handler.handle(second_page)
        ledger.release.set()
        assert await first == PageDone()

    assert second == PageContinues(second_page)
    assert rig.sender.sent_ids == ["c1", "c2"]


@pytest.mark.parametrize(
    "first_admission",
    [Admission("paused", (), ()), RuntimeError("a bug in the ledger adapter")],
    ids=["skipped", "raised"],
)
async def test_a_page_that_ends_before_starting_contacts_stops_counting_as_starting(
    first_admission: Admission | Exception,
) -> None:
    rig = Rig(FakeLedger(first_admission, running(["c2"])), contacts_per_page=2, slice_s=1.0)
    handler = rig.handler()
    async with asyncio.timeout(5):
        with contextlib.suppress(RuntimeError):  # the consumer requeues such a page
            await handler.handle(make_page("c1"))
        await asyncio.sleep(0)  # the count drops right after the first page's end

        assert await handler.handle(make_page("c2")) == PageDone()
    assert rig.sender.sent_ids == ["c2"]
    assert rig.naps == []


async def test_a_crowded_page_parked_at_shutdown_goes_back_untouched_at_once() -> None:
    rig = Rig(FakeLedger(), contacts_per_page=2, slice_s=1.0, token_waiters=[2])

    async def nap_into_shutdown(shutdown: asyncio.Event, seconds: float) -> None:
        rig.naps.append(seconds)
        shutdown.set()
        await asyncio.sleep(0)  # a loop that spun on would meet the rig's timeout

    rig.nap = nap_into_shutdown  # type: ignore[method-assign]
    page = make_page("c1")

    assert await rig.handle(page) == PageContinues(page)
    assert rig.ledger.admits == 0
    assert len(rig.naps) == 1  # no spinning through the rest of the park


async def test_a_page_filling_its_slots_stops_counting_as_starting_while_it_waits_for_more() -> (
    None
):
    # The page before has all its slots busy and more contacts to start: its started
    # contacts are queued for tokens by now, so `crowd` alone judges the next page.
    rig = Rig(FakeLedger(running(["c1", "c2"]), running(["c3"])), contacts_per_page=1, slice_s=1.0)
    sending, release = asyncio.Event(), asyncio.Event()

    async def held(request: InboxRequest) -> ContactOutcome:
        sending.set()
        await release.wait()
        return sent(request.contact_id)

    rig.sender = FakeSender({"c1": held})
    handler = rig.handler()
    async with asyncio.timeout(5):
        first = asyncio.create_task(handler.handle(make_page("c1", "c2")))
        await sending.wait()  # c1 holds the only slot; c2 waits for it

        assert await handler.handle(make_page("c3")) == PageDone()
        release.set()
        assert await first == PageDone()
    assert rig.naps == []
    assert rig.sender.sent_ids == ["c1", "c3", "c2"]
