"""Inbox gate: may a contact be sent to its inbox now (breaker, Retry-After, operator hold)?

    hot path:  clear(inbox)  -- a dict lookup in a local cache (TTL `ttl_s`), no I/O
    results:   record(inbox, result)  -- counters, flushed by `flush_forever` in batches
    held:      admit(...)  -- waits (cut short by a halt) for a notification, the hold's
               end, or the cooldown's end, then claims the one probe; gives up after
               `max_wait_s` with `inbox_held`
    news:      changed(inbox)  -- a pub/sub notification: refetch, wake the waiters

The breaker's decisions are the pure functions of `sender.core.breaker`; the store
(`InboxHealthStore`, Redis) only keeps state and applies compare-and-set transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from sender.core.breaker import (
    Breaker,
    BreakerConfig,
    after_probe,
    after_window,
    blocks,
    is_transient_failure,
    may_probe,
    probing,
)
from sender.core.events import BreakerTransition, Event
from sender.core.policy import AttemptResult, parse_retry_after
from sender.core.ports import CampaignGate, Probe, ReleaseCause
from sender.errors import DependencyUnavailable

log = logging.getLogger(__name__)

HoldKind = Literal["operator", "retry_after", "breaker"]
# Statuses whose Retry-After holds the whole inbox under RETRY_AFTER_SCOPE=inbox.
_HOLDING_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class InboxHealth:
    """What holds an inbox, as stored (wall-clock seconds)."""

    breaker: Breaker = field(default_factory=Breaker)
    retry_after_until: float = 0.0
    operator_hold: bool = False

    def hold(self, now: float, breaker_on: bool = True) -> HoldKind | None:
        """What holds the inbox at `now`, or None when it is clear."""
        if self.operator_hold:
            return "operator"
        if self.retry_after_until > now:
            return "retry_after"
        if breaker_on and blocks(self.breaker):
            return "breaker"
        return None


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """The breaker window's totals after a report, and the state read with them."""

    attempts: int
    failures: int
    health: InboxHealth


class InboxHealthStore(Protocol):
    """Shared inbox state (Redis); every call may raise `DependencyUnavailable`."""

    async def read(self, inbox_id: str) -> InboxHealth:
        """The inbox's breaker and holds."""
        ...

    async def report(
        self, inbox_id: str, attempts: int, failures: int, now: float, window_s: float
    ) -> WindowCounts:
        """Add results to the rolling window; return its totals and the current state."""
        ...

    async def transition(self, inbox_id: str, gen: int, after: Breaker) -> bool:
        """Store `after` if the breaker is still at `gen` (and announce it); False if not."""
        ...

    async def claim_probe(
        self, inbox_id: str, gen: int, after: Breaker, claim: str, lease_s: float
    ) -> bool:
        """Claim the one probe (SET NX, expiring after `lease_s`) and store `after`."""
        ...

    async def release_probe(self, inbox_id: str, claim: str) -> None:
        """Drop our probe claim (if still ours), so another may be claimed."""
        ...

    async def hold_until(self, inbox_id: str, until: float) -> None:
        """Hold the inbox until `until` (the later of this and any hold already set)."""
        ...


@dataclass(frozen=True, slots=True)
class InboxGateConfig:
    """Timing knobs of the inbox gate."""

    breaker: BreakerConfig
    max_wait_s: float
    """Longest one wait lasts before the contact is released `inbox_held`."""
    probe_lease_s: float
    """A probe claim expires after this (its pod died): longer than a token wait + attempt."""
    retry_after_cap_s: float
    retry_after_scope: Literal["inbox", "contact"] = "inbox"
    ttl_s: float = 1.0
    flush_s: float = 0.2


class InboxGate:
    """The `InboxGatePort` of the consumer: local cache, batched reports, shared state."""

    def __init__(
        self,
        store: InboxHealthStore,
        campaigns: CampaignGate,
        config: InboxGateConfig,
        *,
        clock: Callable[[], float],
        emit: Callable[[Event], None],
        claim_ids: Callable[[], str],
    ) -> None:
        self._store = store
        self._campaigns = campaigns
        self._config = config
        self._clock = clock
        self._emit = emit
        self._claim_ids = claim_ids
        self._breaker_on = config.breaker.enabled
        self._cache: dict[str, tuple[InboxHealth, float]] = {}
        self._counts: dict[str, list[int]] = {}
        self._changes: dict[str, asyncio.Future[None]] = {}
        self._fetching: dict[str, asyncio.Future[InboxHealth]] = {}

    # -- hot path ------------------------------------------------------------------------

    def clear(self, inbox_id: str) -> bool:
        """Known clear right now: cached within the TTL and nothing holds it."""
        cached = self._cache.get(inbox_id)
        if cached is None:
            return False
        now = self._clock()
        return cached[1] > now and cached[0].hold(now, self._breaker_on) is None

    async def held(self, inbox_id: str) -> bool:
        """Something holds the inbox now; the cached state is re-read only when stale."""
        if self.clear(inbox_id):
            return False
        health = await self._health(inbox_id)
        return health.hold(self._clock(), self._breaker_on) is not None

    def record(self, inbox_id: str, result: AttemptResult) -> None:
        """Count the result for the next flush (nothing when the breaker is off)."""
        if not self._breaker_on:
            return
        counts = self._counts.get(inbox_id)
        if counts is None:
            counts = self._counts[inbox_id] = [0, 0]
        counts[0] += 1
        if is_transient_failure(result):
            counts[1] += 1

    # -- held --------------------------------------------------------------------------

    async def admit(self, campaign_id: str, inbox_id: str) -> Probe | ReleaseCause | None:
        """Wait until the inbox is clear or this contact holds the probe (see the module)."""
        deadline = self._clock() + self._config.max_wait_s
        while True:
            health = await self._health(inbox_id)
            now = self._clock()
            kind = health.hold(now, self._breaker_on)
            if kind is None:
                return None
            if kind == "breaker" and may_probe(health.breaker, now):
                probe = await self._claim(inbox_id, health.breaker)
                if probe is not None:
                    return probe
            remaining = deadline - now
            if remaining <= 0:
                return "inbox_held"
            nap = min(remaining, self._nap_s(health, kind, now))
            halted = await self._campaigns.sleep(campaign_id, nap, until=self._change(inbox_id))
            if halted is not None:
                return halted

    def _nap_s(self, health: InboxHealth, kind: HoldKind, now: float) -> float:
        """How long to wait before looking again (a notification may end it sooner)."""
        ttl = self._config.ttl_s
        if kind == "retry_after":
            return max(0.001, min(health.retry_after_until - now, ttl))
        if kind == "breaker" and health.breaker.phase == "open":
            return max(0.001, min(health.breaker.until - now, ttl))
        return ttl  # operator hold, or a probe in flight: its end is announced

    async def _claim(self, inbox_id: str, breaker: Breaker) -> Probe | None:
        claim = self._claim_ids()
        after = probing(breaker)
        try:
            won = await self._store.claim_probe(
                inbox_id, breaker.gen, after, claim, self._config.probe_lease_s
            )
        except DependencyUnavailable:
            return None
        if not won:
            self._expire(inbox_id)  # someone else moved it: read it again
            return None
        self._see(inbox_id, _with_breaker(self._cached(inbox_id), after))
        return Probe(inbox_id, claim, after.gen, breaker.cooldown_s)

    async def probe_finished(self, probe: Probe, result: AttemptResult) -> None:
        """Close on anything but a transient failure; reopen with the cooldown doubled."""
        before = Breaker("half_open", 0.0, probe.cooldown_s, probe.gen)
        after = after_probe(
            before, not is_transient_failure(result), self._clock(), self._config.breaker
        )
        try:
            if await self._store.transition(probe.inbox_id, probe.gen, after):
                self._see(probe.inbox_id, _with_breaker(self._cached(probe.inbox_id), after))
                return
        except DependencyUnavailable as error:
            log.warning("breaker probe result not stored", extra={"error": str(error)})
        self._expire(probe.inbox_id)

    async def probe_abandoned(self, probe: Probe) -> None:
        """Give the claim up so the next contact can probe."""
        with contextlib.suppress(DependencyUnavailable):  # else the claim expires by itself
            await self._store.release_probe(probe.inbox_id, probe.claim)

    async def retry_after(self, inbox_id: str, result: AttemptResult) -> None:
        """A 429/503 with `Retry-After` holds the inbox (clamped to the backoff cap)."""
        if self._config.retry_after_scope != "inbox" or result.status not in _HOLDING_STATUSES:
            return
        now = self._clock()
        asked = parse_retry_after(result.retry_after, datetime.fromtimestamp(now, UTC))
        if asked is None or asked <= 0:
            return
        until = now + min(asked, self._config.retry_after_cap_s)
        try:
            await self._store.hold_until(inbox_id, until)
        except DependencyUnavailable as error:
            log.warning("Retry-After hold not stored", extra={"error": str(error)})
        cached = self._cached(inbox_id)
        if until > cached.retry_after_until:
            self._see(
                inbox_id,
                InboxHealth(cached.breaker, until, cached.operator_hold),
            )

    # -- news --------------------------------------------------------------------------

    def changed(self, inbox_id: str) -> None:
        """A notification: the cached state is stale; waiters look again now."""
        self._expire(inbox_id)
        if inbox_id in self._cache:  # someone here cares: refetch now, not at the next look
            self._refetch(inbox_id)
        change = self._changes.pop(inbox_id, None)
        if change is not None and not change.done():
            change.set_result(None)

    async def flush_forever(self) -> None:
        """Report the counted results every `flush_s` (a background job)."""
        while True:
            await asyncio.sleep(self._config.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Report every inbox's counts once; open breakers the window condemns."""
        counts, self._counts = self._counts, {}
        for inbox_id, (attempts, failures) in counts.items():
            try:
                await self._report(inbox_id, attempts, failures)
            except DependencyUnavailable as error:
                log.warning("breaker results not reported", extra={"error": str(error)})

    async def _report(self, inbox_id: str, attempts: int, failures: int) -> None:
        now = self._clock()
        cfg = self._config.breaker
        window = await self._store.report(inbox_id, attempts, failures, now, cfg.window_s)
        self._see(inbox_id, window.health)
        opened = after_window(window.health.breaker, window.attempts, window.failures, now, cfg)
        if opened is not None and await self._store.transition(
            inbox_id, window.health.breaker.gen, opened
        ):
            log.warning(
                "inbox breaker opened",
                extra={"inbox_id": inbox_id, "attempts": window.attempts},
            )
            self._see(inbox_id, _with_breaker(window.health, opened))

    # -- cache -------------------------------------------------------------------------

    async def _health(self, inbox_id: str) -> InboxHealth:
        cached = self._cache.get(inbox_id)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        return await asyncio.shield(self._refetch(inbox_id))

    def _refetch(self, inbox_id: str) -> asyncio.Future[InboxHealth]:
        """One read per inbox at a time: contacts whose cache ran out together share it."""
        fetching = self._fetching.get(inbox_id)
        if fetching is None:
            fetching = asyncio.ensure_future(self._fetch(inbox_id))
            self._fetching[inbox_id] = fetching
            fetching.add_done_callback(lambda _: self._fetching.pop(inbox_id, None))
        return fetching

    async def _fetch(self, inbox_id: str) -> InboxHealth:
        try:
            health = await self._store.read(inbox_id)
        except DependencyUnavailable:
            # Redis is down: keep what we knew (the limiter grants nothing meanwhile anyway).
            return self._cached(inbox_id)
        self._see(inbox_id, health)
        return health

    def _cached(self, inbox_id: str) -> InboxHealth:
        cached = self._cache.get(inbox_id)
        return cached[0] if cached is not None else InboxHealth()

    def _see(self, inbox_id: str, health: InboxHealth) -> None:
        """Cache `health`; count the breaker transition this process sees."""
        was = self._cached(inbox_id).breaker.phase
        self._cache[inbox_id] = (health, self._clock() + self._config.ttl_s)
        if self._breaker_on and health.breaker.phase != was:
            self._emit(BreakerTransition(was, health.breaker.phase))

    def _expire(self, inbox_id: str) -> None:
        cached = self._cache.get(inbox_id)
        if cached is not None:
            self._cache[inbox_id] = (cached[0], 0.0)

    def _change(self, inbox_id: str) -> asyncio.Future[None]:
        change = self._changes.get(inbox_id)
        if change is None or change.done():
            change = self._changes[inbox_id] = asyncio.get_running_loop().create_future()
        return change


def _with_breaker(health: InboxHealth, breaker: Breaker) -> InboxHealth:
    return InboxHealth(breaker, health.retry_after_until, health.operator_hold)
