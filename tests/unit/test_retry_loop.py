"""Spec of the per-contact attempt loop (DESIGN.md §4) over fake ports: no sockets, no sleeping."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal, TypeVar

import pytest

from sender.core.contact_sender import ContactSender
from sender.core.events import (
    AttemptFinished,
    AttemptStarted,
    ContactFinished,
    ContactStarted,
    Event,
    EventBus,
    RetryAborted,
    TerminalFailure,
    TokenWaited,
)
from sender.core.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult, RetryPolicy
from sender.core.ports import ContactOutcome, InboxRequest, StopCause, TokenReply

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy(retry_count=3, base_s=1.0, cap_s=30.0)
MAX_TOKEN_WAIT_S = 30.0
REQUEST = InboxRequest(
    campaign_id="spring-sale",
    contact_id="c-0001",
    inbox_id="inbox-42",
    to="+5511999990001",
    message={"text": "Hi {{name}}"},
    variables={"name": "Ana"},
)

OK = AttemptResult.http(200)
E503 = AttemptResult.http(503)
E504 = AttemptResult.http(504)
E400 = AttemptResult.http(400)
TIMED_OUT = AttemptResult(code=TIMEOUT)
NETWORK = AttemptResult(code=DISPATCH_ERROR)

NOW_OR_NEVER = TokenReply(wait_s=0.0)
NEVER = None  # a FakeLimiter reply: this ask is never answered
RunsOut = Literal["runs out"]
RUNS_OUT: RunsOut = "runs out"  # a FakeGate watch: the whole wait passes, no answer came

E = TypeVar("E")


class TickingClock:
    """A monotonic clock that moves `step` seconds on every read, and when slept on."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self._step = step

    def __call__(self) -> float:
        self.now += self._step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedDispatcher:
    """Returns the scripted results in order; an unscripted attempt fails the test."""

    def __init__(self, *results: AttemptResult) -> None:
        self._results = list(results)
        self.requests: list[InboxRequest] = []
        self.timeline: list[str] = []

    async def send(self, request: InboxRequest) -> AttemptResult:
        self.requests.append(request)
        self.timeline.append("send")
        assert self._results, "an attempt the script did not expect"
        return self._results.pop(0)


class FakeLimiter:
    """Answers the scripted replies in order (NEVER: no answer until withdrawn), then at once."""

    def __init__(self, *replies: TokenReply | None) -> None:
        self._replies = list(replies)
        self.reserves: list[str] = []
        self.campaigns: list[str] = []
        self.withdrawn = 0
        self.timeline: list[str] = []

    async def reserve(self, inbox_id: str, campaign_id: str = "") -> TokenReply:
        self.reserves.append(inbox_id)
        self.campaigns.append(campaign_id)
        self.timeline.append("reserve")
        reply = self._replies.pop(0) if self._replies else NOW_OR_NEVER
        if reply is not None:
            return reply
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.withdrawn += 1
            raise
        raise AssertionError("a limiter scripted never to answer answered")


class FakeGate:
    """Scripted blockers and sleep interruptions (None = go on), recording requested sleeps.

    A plain sleep that is not cut short moves the clock it is given by the seconds slept,
    plus the next of `oversleeps` (a late wake-up).
    A sleep with `until` (the loop watching a limiter call) is recorded in `watches`, takes
    its interruptions from `watch_causes` (RUNS_OUT: all `seconds` pass, the clock with
    them), and otherwise lasts until `until` is done.
    """

    def __init__(
        self,
        blockers: tuple[StopCause | None, ...] = (),
        sleep_causes: tuple[StopCause | None, ...] = (),
        watch_causes: tuple[StopCause | RunsOut | None, ...] = (),
        oversleeps: tuple[float, ...] = (),
    ) -> None:
        self._blockers = list(blockers)
        self._oversleeps = list(oversleeps)
        self._sleep_causes = list(sleep_causes)
        self._watch_causes = list(watch_causes)
        self.sleeps: list[float] = []
        self.watches: list[float] = []
        self.timeline: list[str] = []
        self.clock: TickingClock | None = None

    async def blocker(self, campaign_id: str) -> StopCause | None:
        return self._blockers.pop(0) if self._blockers else None

    async def sleep(
        self, campaign_id: str, seconds: float, until: asyncio.Future[Any] | None = None
    ) -> StopCause | None:
        if until is not None:
            self.watches.append(seconds)
            cause = self._watch_causes.pop(0) if self._watch_causes else None
            if cause is None:
                await asyncio.wait({until})
                return None
            await asyncio.sleep(0)  # the watched call gets going before the halt or time-out
            if cause == RUNS_OUT:
                if self.clock is not None:
                    self.clock.advance(seconds)
                return None
            return cause
        self.sleeps.append(seconds)
        self.timeline.append(f"sleep {seconds}")
        cause = self._sleep_causes.pop(0) if self._sleep_causes else None
        if cause is None and self.clock is not None:
            self.clock.advance(seconds + (self._oversleeps.pop(0) if self._oversleeps else 0.0))
        return cause


@dataclass
class Rig:
    """One contact sender wired to fakes, and everything it emitted.

    The gate's sleeps move the rig's clock, and the fakes share one timeline.
    """

    dispatcher: ScriptedDispatcher
    limiter: FakeLimiter = field(default_factory=FakeLimiter)
    gate: FakeGate = field(default_factory=FakeGate)
    policy: RetryPolicy = POLICY
    clock: TickingClock = field(default_factory=lambda: TickingClock(0.0))
    http_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    events: list[Event] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.clock = self.clock
        self.dispatcher.timeline = self.limiter.timeline = self.gate.timeline = self.timeline

    async def send(self, request: InboxRequest = REQUEST) -> ContactOutcome:
        sender = ContactSender(
            dispatcher=self.dispatcher,
            limiter=self.limiter,
            gate=self.gate,
            policy=self.policy,
            events=EventBus([self.events.append]),
            max_token_wait_s=MAX_TOKEN_WAIT_S,
            http_slots=self.http_slots,
            monotonic=self.clock,
            rng=random.Random(0),
            wall_clock=lambda: NOW,
        )
        return await sender.send(request)

    def emitted(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def attempts(self) -> int:
        return len(self.dispatcher.requests)


# --- exhaustion and success ------------------------------------------------------------------


async def test_503_every_time_fails_after_four_attempts() -> None:
    rig = Rig(ScriptedDispatcher(E503, E503, E503, E503))

    outcome = await rig.send()

    assert outcome == ContactOutcome.failed(
        "spring-sale",
        "c-0001",
        attempts=4,
        reason='dispatch_exhausted_retries: ["503","503","503","503"]',
        last_status_code=503,
    )
    assert rig.attempts == 4
    assert rig.gate.sleeps == [1.0, 2.0, 4.0]
    assert rig.emitted(TerminalFailure) == [TerminalFailure("exhausted_retries")]


async def test_exhaustion_reason_lists_every_code_in_order() -> None:
    rig = Rig(ScriptedDispatcher(E503, NETWORK, E504, E503))

    outcome = await rig.send()

    assert outcome.reason == 'dispatch_exhausted_retries: ["503","DISPATCH_ERROR","504","503"]'


async def test_503_then_200_is_sent_on_the_first_retry() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK))

    outcome = await rig.send()

    assert outcome == ContactOutcome.sent("spring-sale", "c-0001", attempts=2, last_status_code=200)
    assert rig.emitted(AttemptStarted) == [AttemptStarted(0), AttemptStarted(1)]
    assert rig.gate.sleeps == [1.0]
    assert rig.emitted(TerminalFailure) == []


async def test_200_at_once_is_sent_after_one_attempt_without_sleeping() -> None:
    rig = Rig(ScriptedDispatcher(OK))

    outcome = await rig.send()

    assert (outcome.status, outcome.attempts, outcome.last_status_code) == ("sent", 1, 200)
    assert rig.gate.sleeps == []


async def test_retry_count_zero_fails_after_one_attempt() -> None:
    rig = Rig(ScriptedDispatcher(E503), policy=RetryPolicy(retry_count=0))

    outcome = await rig.send()

    assert (outcome.status, outcome.attempts) == ("failed", 1)
    assert outcome.reason == 'dispatch_exhausted_retries: ["503"]'
    assert rig.gate.sleeps == []


async def test_400_fails_at_once_with_http_4xx_reason() -> None:
    rig = Rig(ScriptedDispatcher(E400))

    outcome = await rig.send()

    assert outcome == ContactOutcome.failed(
        "spring-sale", "c-0001", attempts=1, reason="http_4xx: 400", last_status_code=400
    )
    assert rig.emitted(TerminalFailure) == [TerminalFailure("http_4xx")]
    assert rig.gate.sleeps == []
    assert len(rig.limiter.reserves) == 1


async def test_every_token_is_asked_for_the_contacts_campaign_so_campaigns_share_fairly() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK))

    await rig.send()

    assert rig.limiter.campaigns == ["spring-sale", "spring-sale"]


async def test_every_attempt_sends_the_same_request() -> None:
    rig = Rig(ScriptedDispatcher(E503, TIMED_OUT, OK))

    await rig.send()

    assert rig.dispatcher.requests == [REQUEST] * 3


# --- backoff delays --------------------------------------------------------------------------


async def test_retry_after_raises_the_backoff_sleep() -> None:
    rig = Rig(ScriptedDispatcher(AttemptResult.http(429, retry_after="7"), OK))

    await rig.send()

    assert rig.gate.sleeps == [7.0]


async def test_retry_after_http_date_is_read_against_the_injected_wall_clock() -> None:
    in_ten_s = format_datetime(NOW + timedelta(seconds=10), usegmt=True)
    rig = Rig(ScriptedDispatcher(AttemptResult.http(503, retry_after=in_ten_s), OK))

    await rig.send()

    assert rig.gate.sleeps == [10.0]


async def test_jitter_draws_from_the_injected_rng() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK), policy=RetryPolicy(jitter="full"))

    await rig.send()

    assert rig.gate.sleeps == [random.Random(0).uniform(0, 1.0)]


# --- rate-limit tokens -----------------------------------------------------------------------


async def test_every_attempt_takes_a_token() -> None:
    rig = Rig(ScriptedDispatcher(E503, E503, E503, E503))

    await rig.send()

    assert rig.limiter.reserves == ["inbox-42"] * 4
    assert rig.gate.watches == [MAX_TOKEN_WAIT_S] * 4
    assert rig.timeline == [
        "reserve", "send", "sleep 1.0",
        "reserve", "send", "sleep 2.0",
        "reserve", "send", "sleep 4.0",
        "reserve", "send",
    ]  # fmt: skip


async def test_a_reserved_token_is_waited_for_through_the_gate_before_the_attempt() -> None:
    rig = Rig(ScriptedDispatcher(OK), limiter=FakeLimiter(TokenReply(0.3)))

    outcome = await rig.send()

    assert outcome.status == "sent"
    assert rig.timeline == ["reserve", "sleep 0.3", "send"]
    assert rig.emitted(TokenWaited) == [TokenWaited(0.3)]


async def test_a_token_woken_later_than_its_limit_is_left_unused_and_a_fresh_one_taken() -> None:
    late = TokenReply(0.3, late_limit_s=0.1)
    rig = Rig(
        ScriptedDispatcher(OK),
        limiter=FakeLimiter(late, TokenReply(0.2, late_limit_s=0.1)),
        gate=FakeGate(oversleeps=(0.15, 0.05)),
    )

    outcome = await rig.send()

    # 0.15 s late: a stalled loop would send it together with on-time tokens. 0.05 s: in time.
    assert rig.timeline == ["reserve", "sleep 0.3", "reserve", "sleep 0.2", "send"]
    assert outcome == ContactOutcome.sent("spring-sale", "c-0001", attempts=1, last_status_code=200)


async def test_a_token_that_is_ready_now_is_taken_without_sleeping() -> None:
    rig = Rig(ScriptedDispatcher(OK), limiter=FakeLimiter(NOW_OR_NEVER))

    await rig.send()

    assert rig.timeline == ["reserve", "send"]
    assert rig.emitted(TokenWaited) == [TokenWaited(0.0)]


async def test_each_token_wait_is_reported_zero_included() -> None:
    rig = Rig(
        ScriptedDispatcher(E503, OK),
        limiter=FakeLimiter(NOW_OR_NEVER, TokenReply(0.75)),
    )

    await rig.send()

    assert rig.emitted(TokenWaited) == [TokenWaited(0.0), TokenWaited(0.75)]
    assert rig.gate.sleeps == [1.0, 0.75]  # backoff, then the token


async def test_no_token_within_max_wait_releases_the_contact_pending_without_an_attempt() -> None:
    rig = Rig(
        ScriptedDispatcher(OK), limiter=FakeLimiter(NEVER), gate=FakeGate(watch_causes=(RUNS_OUT,))
    )

    outcome = await rig.send()
    await asyncio.sleep(0)  # one loop turn: the withdrawn call sees its cancellation

    assert outcome == ContactOutcome.released(
        "spring-sale", "c-0001", "no_token", attempts=0, last_status_code=None
    )
    assert rig.limiter.withdrawn == 1  # it left the limiter's queue
    assert rig.attempts == 0
    assert rig.emitted(AttemptStarted) == []
    assert rig.emitted(TokenWaited) == []
    assert rig.emitted(TerminalFailure) == []


async def test_no_token_in_time_is_final_the_limiter_is_not_asked_again_nor_waited_out() -> None:
    rig = Rig(
        ScriptedDispatcher(OK),
        limiter=FakeLimiter(NEVER, NOW_OR_NEVER),
        gate=FakeGate(watch_causes=(RUNS_OUT,)),
    )

    await rig.send()

    assert rig.limiter.reserves == ["inbox-42"]
    assert rig.gate.watches == [MAX_TOKEN_WAIT_S]
    assert rig.gate.sleeps == []
    assert rig.timeline == ["reserve"]


async def test_no_first_token_by_the_pages_slice_releases_the_contact_unstarted() -> None:
    rig = Rig(
        ScriptedDispatcher(OK), limiter=FakeLimiter(NEVER), gate=FakeGate(watch_causes=(RUNS_OUT,))
    )

    outcome = await rig.send(replace(REQUEST, first_token_by=2.0))

    assert rig.gate.watches == [2.0]  # not the whole RATE_LIMIT_MAX_WAIT_MS
    assert outcome == ContactOutcome.released(
        "spring-sale", "c-0001", "deadline", attempts=0, last_status_code=None
    )


async def test_a_retrys_token_is_not_bound_by_the_slice_only_by_the_max_wait() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK))

    outcome = await rig.send(replace(REQUEST, first_token_by=0.5))

    assert rig.gate.watches == [0.5, MAX_TOKEN_WAIT_S]  # the backoff ran past the slice
    assert outcome.status == "sent"
    assert outcome.attempts == 2


async def test_each_attempt_asks_for_a_token_once_with_the_full_budget() -> None:
    rig = Rig(
        ScriptedDispatcher(E503, OK),
        limiter=FakeLimiter(TokenReply(20.0), TokenReply(25.0)),
    )

    outcome = await rig.send()

    assert (outcome.status, outcome.attempts) == ("sent", 2)
    assert rig.limiter.reserves == ["inbox-42"] * 2
    assert rig.gate.watches == [MAX_TOKEN_WAIT_S] * 2
    assert rig.emitted(TokenWaited) == [TokenWaited(20.0), TokenWaited(25.0)]


async def test_no_token_for_a_retry_releases_pending_and_uses_up_no_retry() -> None:
    rig = Rig(
        ScriptedDispatcher(E503, OK),
        limiter=FakeLimiter(NOW_OR_NEVER, NEVER),
        gate=FakeGate(watch_causes=(None, RUNS_OUT)),
    )

    outcome = await rig.send()

    assert (outcome.status, outcome.release, outcome.attempts) == ("pending", "no_token", 1)
    assert outcome.reason is None
    assert outcome.last_status_code == 503
    assert rig.emitted(AttemptStarted) == [AttemptStarted(0)]  # no retry was made
    assert rig.emitted(TerminalFailure) == []


# --- HTTP slots ------------------------------------------------------------------------------


class SlotWatchingDispatcher(ScriptedDispatcher):
    """Records, at each attempt, whether the HTTP slot is held."""

    def __init__(self, slots: asyncio.Semaphore, *results: AttemptResult) -> None:
        super().__init__(*results)
        self._slots = slots
        self.slot_held: list[bool] = []

    async def send(self, request: InboxRequest) -> AttemptResult:
        self.slot_held.append(self._slots.locked())
        return await super().send(request)


class SlotWatchingGate(FakeGate):
    """Records, at each sleep and each blocker check, whether the HTTP slot is held."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        super().__init__()
        self._slots = slots
        self.slot_held: list[bool] = []

    async def blocker(self, campaign_id: str) -> StopCause | None:
        self.slot_held.append(self._slots.locked())
        return await super().blocker(campaign_id)

    async def sleep(
        self, campaign_id: str, seconds: float, until: asyncio.Future[Any] | None = None
    ) -> StopCause | None:
        self.slot_held.append(self._slots.locked())
        return await super().sleep(campaign_id, seconds, until)


async def test_the_http_slot_is_held_during_each_attempt_and_never_while_waiting() -> None:
    slots = asyncio.Semaphore(1)
    rig = Rig(
        SlotWatchingDispatcher(slots, E503, OK),
        limiter=FakeLimiter(TokenReply(0.5), TokenReply(0.25)),
        gate=SlotWatchingGate(slots),
        http_slots=slots,
    )

    outcome = await rig.send()

    assert outcome.status == "sent"
    assert rig.timeline == [
        "reserve", "sleep 0.5", "send", "sleep 1.0",
        "reserve", "sleep 0.25", "send",
    ]  # fmt: skip
    assert isinstance(rig.dispatcher, SlotWatchingDispatcher)
    assert isinstance(rig.gate, SlotWatchingGate)
    assert rig.dispatcher.slot_held == [True, True]
    assert rig.gate.slot_held == [False] * 7  # 2 blocker checks, 3 sleeps, 2 limiter calls
    assert not slots.locked()


async def test_the_http_slot_is_given_back_when_the_contact_ends() -> None:
    slots = asyncio.Semaphore(1)
    for result in (OK, E400):
        rig = Rig(ScriptedDispatcher(result), http_slots=slots)

        await rig.send()

        assert not slots.locked()


# --- pause, stop and shutdown ----------------------------------------------------------------


@pytest.mark.parametrize("cause", ["paused", "stopped", "completed", "shutdown"])
async def test_blocked_campaign_releases_pending_before_the_first_attempt(
    cause: StopCause,
) -> None:
    rig = Rig(ScriptedDispatcher(OK), gate=FakeGate(blockers=(cause,)))

    outcome = await rig.send()

    assert outcome == ContactOutcome.released("spring-sale", "c-0001", cause, attempts=0)
    assert rig.attempts == 0
    assert rig.limiter.reserves == []


@pytest.mark.parametrize("cause", ["paused", "stopped", "completed", "shutdown"])
async def test_a_token_wait_cut_short_releases_pending_with_its_cause_and_no_attempt(
    cause: StopCause,
) -> None:
    rig = Rig(
        ScriptedDispatcher(OK),
        limiter=FakeLimiter(TokenReply(0.5)),
        gate=FakeGate(sleep_causes=(cause,)),
    )

    outcome = await rig.send()

    assert outcome == ContactOutcome.released("spring-sale", "c-0001", cause, attempts=0)
    assert rig.attempts == 0
    assert rig.gate.sleeps == [0.5]
    assert rig.emitted(TokenWaited) == []


class HangingLimiter(FakeLimiter):
    """A limiter whose answer never comes (a store that hangs); says when it is asked."""

    def __init__(self) -> None:
        super().__init__(NEVER)
        self.asked = asyncio.Event()

    async def reserve(self, inbox_id: str, campaign_id: str = "") -> TokenReply:
        self.asked.set()
        return await super().reserve(inbox_id, campaign_id)


@pytest.mark.parametrize("cause", ["paused", "stopped", "completed", "shutdown"])
async def test_a_halt_while_the_limiter_is_still_answering_releases_pending_and_withdraws(
    cause: StopCause,
) -> None:
    rig = Rig(
        ScriptedDispatcher(OK), limiter=HangingLimiter(), gate=FakeGate(watch_causes=(cause,))
    )

    outcome = await rig.send()
    await asyncio.sleep(0)  # one loop turn: the withdrawn call sees its cancellation

    assert outcome == ContactOutcome.released("spring-sale", "c-0001", cause, attempts=0)
    assert rig.gate.watches == [MAX_TOKEN_WAIT_S]
    assert rig.limiter.reserves == ["inbox-42"]
    assert isinstance(rig.limiter, HangingLimiter)
    assert rig.limiter.withdrawn
    assert rig.attempts == 0


async def test_a_contact_cancelled_while_waiting_for_a_token_leaves_the_limiter_queue() -> None:
    limiter = HangingLimiter()
    rig = Rig(ScriptedDispatcher(OK), limiter=limiter)
    sending = asyncio.create_task(rig.send())
    await limiter.asked.wait()

    sending.cancel()  # a drain that ran out of grace
    with pytest.raises(asyncio.CancelledError):
        await sending
    await asyncio.sleep(0)  # one loop turn: the withdrawn call sees its cancellation

    assert limiter.withdrawn
    assert rig.attempts == 0


async def test_a_halt_while_the_limiter_is_answering_a_retry_keeps_the_attempts_made() -> None:
    rig = Rig(
        ScriptedDispatcher(E503, OK),
        limiter=FakeLimiter(NOW_OR_NEVER, TokenReply(0.5)),
        gate=FakeGate(watch_causes=(None, "stopped")),
    )

    outcome = await rig.send()

    assert outcome == ContactOutcome.released(
        "spring-sale", "c-0001", "stopped", attempts=1, last_status_code=503
    )
    assert rig.gate.watches == [MAX_TOKEN_WAIT_S] * 2
    assert rig.gate.sleeps == [1.0]  # the backoff only: no slot is waited for after a halt
    assert rig.emitted(TokenWaited) == [TokenWaited(0.0)]
    assert rig.emitted(TerminalFailure) == []


async def test_a_token_wait_for_a_retry_cut_short_keeps_the_attempts_made() -> None:
    rig = Rig(
        ScriptedDispatcher(E503, OK),
        limiter=FakeLimiter(NOW_OR_NEVER, TokenReply(0.5)),
        gate=FakeGate(sleep_causes=(None, "shutdown")),
    )

    outcome = await rig.send()

    assert outcome == ContactOutcome.released(
        "spring-sale", "c-0001", "shutdown", attempts=1, last_status_code=503
    )
    assert rig.gate.sleeps == [1.0, 0.5]
    assert rig.emitted(TerminalFailure) == []


async def test_pause_during_backoff_releases_pending_with_no_further_attempt() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK), gate=FakeGate(sleep_causes=("paused",)))

    outcome = await rig.send()

    assert outcome == ContactOutcome.released(
        "spring-sale", "c-0001", "paused", attempts=1, last_status_code=503
    )
    assert rig.attempts == 1
    assert rig.emitted(RetryAborted) == [RetryAborted("spring-sale", "c-0001", "paused")]
    assert rig.emitted(TerminalFailure) == []


async def test_stop_after_a_later_backoff_keeps_the_attempts_made() -> None:
    rig = Rig(
        ScriptedDispatcher(E503, TIMED_OUT, OK), gate=FakeGate(sleep_causes=(None, "stopped"))
    )

    outcome = await rig.send()

    assert (outcome.status, outcome.release, outcome.attempts) == ("pending", "stopped", 2)
    assert rig.gate.sleeps == [1.0, 2.0]
    assert rig.emitted(RetryAborted) == [RetryAborted("spring-sale", "c-0001", "stopped")]


async def test_campaign_halted_between_backoff_and_retry_releases_pending() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK), gate=FakeGate(blockers=(None, "paused")))

    outcome = await rig.send()

    assert (outcome.status, outcome.release, outcome.attempts) == ("pending", "paused", 1)
    assert len(rig.limiter.reserves) == 1


# --- last status code ------------------------------------------------------------------------


async def test_last_status_code_is_the_last_http_status_received() -> None:
    rig = Rig(ScriptedDispatcher(E504, E503, TIMED_OUT, NETWORK))

    outcome = await rig.send()

    assert outcome.reason == 'dispatch_exhausted_retries: ["504","503","TIMEOUT","DISPATCH_ERROR"]'
    assert outcome.last_status_code == 503


async def test_last_status_code_is_none_without_an_http_status() -> None:
    rig = Rig(ScriptedDispatcher(TIMED_OUT, NETWORK, TIMED_OUT, NETWORK))

    outcome = await rig.send()

    assert outcome.status == "failed"
    assert outcome.last_status_code is None


# --- events ----------------------------------------------------------------------------------


async def test_events_open_with_contact_started_and_close_with_its_outcome() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK))

    outcome = await rig.send()

    assert rig.events[0] == ContactStarted("spring-sale", "c-0001")
    assert rig.events[-1] == ContactFinished(outcome)


class RaisingDispatcher(ScriptedDispatcher):
    async def send(self, request: InboxRequest) -> AttemptResult:
        raise RuntimeError("a bug in the dispatcher")


async def test_a_loop_that_raises_still_closes_with_contact_finished_then_raises() -> None:
    rig = Rig(RaisingDispatcher())

    with pytest.raises(RuntimeError):
        await rig.send()

    assert rig.events[0] == ContactStarted("spring-sale", "c-0001")
    assert rig.events[-1] == ContactFinished(
        ContactOutcome.released("spring-sale", "c-0001", "crashed")
    )


async def test_attempt_finished_carries_retry_number_result_and_duration() -> None:
    rig = Rig(ScriptedDispatcher(E503, OK), clock=TickingClock(0.25))

    await rig.send()

    assert rig.emitted(AttemptFinished) == [
        AttemptFinished("spring-sale", "c-0001", 0, E503, 0.25),
        AttemptFinished("spring-sale", "c-0001", 1, OK, 0.25),
    ]
