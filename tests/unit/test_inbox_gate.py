"""Spec of the inbox gate and the contact loop under it, over an in-memory store."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sender.core.breaker import Breaker, BreakerConfig
from sender.core.contact_sender import ContactSender
from sender.core.events import BreakerTransition, Event, EventBus
from sender.core.inbox_gate import InboxGate, InboxGateConfig, InboxHealth, WindowCounts
from sender.core.policy import AttemptResult, RetryPolicy
from sender.core.ports import InboxRequest, StopCause, TokenReply

INBOX = "inbox-42"
REQUEST = InboxRequest("spring-sale", "c-0001", INBOX, "+5511999990001", {"text": "Hi"})
BREAKER = BreakerConfig(window_s=2, min_attempts=4, failure_ratio=0.5, cooldown_s=1)
E503 = AttemptResult.http(503)
OK = AttemptResult.http(200)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryHealth:
    """An `InboxHealthStore` in a dict; the window keeps every report (no expiry needed)."""

    def __init__(self) -> None:
        self.health = InboxHealth()
        self.window = [0, 0]
        self.probe: str | None = None
        self.reads = 0

    async def read(self, inbox_id: str) -> InboxHealth:
        self.reads += 1
        return self.health

    async def report(
        self, inbox_id: str, attempts: int, failures: int, now: float, window_s: float
    ) -> WindowCounts:
        self.window[0] += attempts
        self.window[1] += failures
        return WindowCounts(self.window[0], self.window[1], self.health)

    async def transition(self, inbox_id: str, gen: int, after: Breaker) -> bool:
        if self.health.breaker.gen != gen:
            return False
        self._set(after)
        if after.phase != "half_open":
            self.probe = None
        return True

    async def claim_probe(
        self, inbox_id: str, gen: int, after: Breaker, claim: str, lease_s: float
    ) -> bool:
        if self.health.breaker.gen != gen or self.probe is not None:
            return False
        self.probe = claim
        self._set(after)
        return True

    async def release_probe(self, inbox_id: str, claim: str) -> None:
        if self.probe == claim:
            self.probe = None

    async def hold_until(self, inbox_id: str, until: float) -> None:
        h = self.health
        self.health = InboxHealth(h.breaker, max(h.retry_after_until, until), h.operator_hold)

    def _set(self, breaker: Breaker) -> None:
        h = self.health
        self.health = InboxHealth(breaker, h.retry_after_until, h.operator_hold)


class TimeGate:
    """A campaign gate whose sleeps pass the clock's time (or end on a scripted halt)."""

    def __init__(self, clock: Clock, halt_after: int | None = None) -> None:
        self.clock = clock
        self.sleeps: list[float] = []
        self._halt_after = halt_after

    async def blocker(self, campaign_id: str) -> StopCause | None:
        return None

    async def sleep(
        self, campaign_id: str, seconds: float, until: asyncio.Future[Any] | None = None
    ) -> StopCause | None:
        if until is not None and until.done():
            return None
        self.sleeps.append(seconds)
        if self._halt_after is not None and len(self.sleeps) > self._halt_after:
            return "paused"
        self.clock.now += seconds
        await asyncio.sleep(0)
        return None


class CountingLimiter:
    def __init__(self) -> None:
        self.reserves = 0

    async def reserve(self, inbox_id: str, campaign_id: str = "") -> TokenReply:
        self.reserves += 1
        return TokenReply(0.0)


class Scripted:
    def __init__(self, *results: AttemptResult) -> None:
        self.results = list(results)
        self.sent = 0

    async def send(self, request: InboxRequest) -> AttemptResult:
        self.sent += 1
        return self.results.pop(0)


def _gate(
    store: MemoryHealth,
    clock: Clock,
    campaigns: TimeGate,
    events: list[Event],
    *,
    scope: Any = "inbox",
    max_wait_s: float = 30.0,
) -> InboxGate:
    ids = itertools.count()
    config = InboxGateConfig(
        breaker=BREAKER,
        max_wait_s=max_wait_s,
        probe_lease_s=60,
        retry_after_cap_s=30,
        retry_after_scope=scope,
    )
    return InboxGate(
        store, campaigns, config, clock=clock, emit=events.append, claim_ids=lambda: str(next(ids))
    )


def _sender(
    gate: InboxGate, campaigns: TimeGate, limiter: CountingLimiter, d: Scripted, retries: int
) -> ContactSender:
    return ContactSender(
        dispatcher=d,
        limiter=limiter,
        gate=campaigns,
        policy=RetryPolicy(retry_count=retries, base_s=0.0, cap_s=30.0),
        events=EventBus(),
        max_token_wait_s=30.0,
        http_slots=asyncio.Semaphore(1),
        monotonic=lambda: 0.0,
        inbox_gate=gate,
    )


def _open(store: MemoryHealth, until: float) -> None:
    store.health = InboxHealth(Breaker("open", until, 1.0, 1))


async def test_a_window_of_mostly_transient_failures_opens_the_breaker_on_flush() -> None:
    clock, store, events = Clock(), MemoryHealth(), []
    gate = _gate(store, clock, TimeGate(clock), events)
    for result in (E503, E503, OK, AttemptResult.http(429)):
        gate.record(INBOX, result)
    await gate.flush()
    assert store.health.breaker == Breaker("open", clock.now + 1.0, 1.0, 1)
    assert events == [BreakerTransition("closed", "open")]
    assert not gate.clear(INBOX)


async def test_4xx_answers_never_open_it() -> None:
    clock, store = Clock(), MemoryHealth()
    gate = _gate(store, clock, TimeGate(clock), [])
    for _ in range(10):
        gate.record(INBOX, AttemptResult.http(429))
    await gate.flush()
    assert store.health.breaker.phase == "closed"


async def test_a_held_contact_takes_no_token_and_is_released_after_the_longest_wait() -> None:
    clock, store = Clock(), MemoryHealth()
    store.health = InboxHealth(operator_hold=True)
    campaigns, limiter, dispatcher = TimeGate(clock), CountingLimiter(), Scripted()
    gate = _gate(store, clock, campaigns, [], max_wait_s=5.0)
    outcome = await _sender(gate, campaigns, limiter, dispatcher, retries=3).send(REQUEST)
    assert outcome.status == "pending"
    assert outcome.release == "inbox_held"
    assert (limiter.reserves, dispatcher.sent, outcome.attempts) == (0, 0, 0)
    assert sum(campaigns.sleeps) == 5.0  # each wait slice is bounded, none spins


class HoldingLimiter(CountingLimiter):
    """Grants at once; the first grant comes as a Retry-After hold of the inbox is announced."""

    def __init__(self, store: MemoryHealth, clock: Clock, hold_s: float) -> None:
        super().__init__()
        self.gate: InboxGate | None = None
        self._store, self._clock, self._hold_s = store, clock, hold_s
        self.granted_at: list[float] = []

    async def reserve(self, inbox_id: str, campaign_id: str = "") -> TokenReply:
        if self.reserves == 0:
            await self._store.hold_until(inbox_id, self._clock() + self._hold_s)
            assert self.gate is not None
            self.gate.changed(inbox_id)  # the hold's notification
        self.granted_at.append(self._clock())
        return await super().reserve(inbox_id, campaign_id)


async def test_a_token_taken_while_the_inbox_became_held_is_not_used_after_the_hold() -> None:
    clock, store = Clock(), MemoryHealth()
    campaigns, dispatcher = TimeGate(clock), Scripted(OK)
    limiter = HoldingLimiter(store, clock, hold_s=2.0)
    gate = limiter.gate = _gate(store, clock, campaigns, [])
    held_until = clock() + 2.0
    sender = _sender(gate, campaigns, limiter, dispatcher, retries=3)

    outcome = await sender.send(REQUEST)

    assert (outcome.status, outcome.attempts) == ("sent", 1)
    # The token granted before the hold is spent; the attempt uses one taken after it.
    assert limiter.reserves == 2
    assert limiter.granted_at[-1] >= held_until


async def test_a_pause_ends_the_wait_for_a_held_inbox() -> None:
    clock, store = Clock(), MemoryHealth()
    store.health = InboxHealth(operator_hold=True)
    campaigns = TimeGate(clock, halt_after=2)
    gate = _gate(store, clock, campaigns, [])
    assert await gate.admit("spring-sale", INBOX) == "paused"


async def test_after_the_cooldown_exactly_one_contact_probes() -> None:
    clock, store = Clock(), MemoryHealth()
    _open(store, until=clock.now)
    campaigns = TimeGate(clock)
    gate = _gate(store, clock, campaigns, [], max_wait_s=3.0)
    first, second = await asyncio.gather(
        gate.admit("spring-sale", INBOX), gate.admit("spring-sale", INBOX)
    )
    answers = sorted([first, second], key=str)
    assert answers[1] == "inbox_held"
    assert answers[0] is not None
    assert not isinstance(answers[0], str)
    assert store.health.breaker.phase == "half_open"


async def test_a_failed_probe_uses_none_of_the_contact_s_retries() -> None:
    clock, store, events = Clock(), MemoryHealth(), []
    _open(store, until=clock.now)
    campaigns, limiter = TimeGate(clock), CountingLimiter()
    dispatcher = Scripted(E503, OK)  # the probe fails; the breaker reopens; the next closes
    gate = _gate(store, clock, campaigns, events)
    outcome = await _sender(gate, campaigns, limiter, dispatcher, retries=0).send(REQUEST)
    assert outcome.status == "sent"  # with no retries at all, yet two attempts
    assert outcome.attempts == 2
    assert store.health.breaker.phase == "closed"
    assert store.health.breaker.gen == 5  # open -> half -> open (2 s) -> half -> closed
    # This process first saw it open (a transition from the closed it assumed).
    assert [e.to for e in events if isinstance(e, BreakerTransition)] == [
        "open",
        "half_open",
        "open",
        "half_open",
        "closed",
    ]


async def test_retry_after_on_a_503_holds_the_inbox_clamped_to_the_cap() -> None:
    clock, store = Clock(), MemoryHealth()
    gate = _gate(store, clock, TimeGate(clock), [])
    await gate.retry_after(INBOX, AttemptResult.http(503, retry_after="3600"))
    assert store.health.retry_after_until == clock.now + 30
    assert not gate.clear(INBOX)


async def test_retry_after_scope_contact_holds_nothing_and_a_400_never_holds() -> None:
    clock, store = Clock(), MemoryHealth()
    gate = _gate(store, clock, TimeGate(clock), [], scope="contact")
    await gate.retry_after(INBOX, AttemptResult.http(429, retry_after="2"))
    inbox_scope = _gate(store, clock, TimeGate(clock), [])
    await inbox_scope.retry_after(INBOX, AttemptResult.http(400, retry_after="2"))
    assert store.health.retry_after_until == 0.0


async def test_a_notification_makes_waiters_look_again_at_once() -> None:
    clock, store = Clock(), MemoryHealth()
    store.health = InboxHealth(operator_hold=True)
    gate = _gate(store, clock, TimeGate(clock), [])
    assert await gate.admit("spring-sale", INBOX) == "inbox_held"
    store.health = InboxHealth()
    reads = store.reads
    gate.changed(INBOX)
    await asyncio.sleep(0)
    assert store.reads == reads + 1
    assert gate.clear(INBOX)
