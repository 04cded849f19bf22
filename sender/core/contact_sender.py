"""The per-contact attempt loop: token, attempt, pure decision, interruptible backoff.

Every I/O sits behind a port; time and randomness are injected, so unit tests are exact.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import assert_never

from sender.core.breaker import is_transient_failure
from sender.core.events import (
    AttemptFinished,
    AttemptStarted,
    ContactFinished,
    ContactStarted,
    EventBus,
    RetryAborted,
    TerminalFailure,
    TokenWaited,
)
from sender.core.policy import (
    FIRST_ROUND,
    AttemptResult,
    Defer,
    EarlierRounds,
    Fail,
    Retry,
    RetryPolicy,
    Sent,
    decide,
    is_last_of_round,
)
from sender.core.ports import (
    CampaignGate,
    ContactOutcome,
    Dispatcher,
    InboxGatePort,
    InboxRequest,
    OpenInboxGate,
    Probe,
    RateLimiter,
    ReleaseCause,
    RoundHistory,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Token:
    """A token taken: how long it took, and when (monotonic) it goes stale unused."""

    waited_s: float
    stale_at: float


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ContactSender:
    """Runs one contact to `sent`, `failed` or a `pending` release."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        limiter: RateLimiter,
        gate: CampaignGate,
        policy: RetryPolicy,
        events: EventBus,
        max_token_wait_s: float,
        http_slots: asyncio.Semaphore,
        monotonic: Callable[[], float],
        rng: random.Random | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        inbox_gate: InboxGatePort | None = None,
        history: RoundHistory | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._limiter = limiter
        self._gate = gate
        self._policy = policy
        self._events = events
        self._max_token_wait_s = max_token_wait_s
        self._http_slots = http_slots
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._inbox = inbox_gate if inbox_gate is not None else OpenInboxGate()
        if policy.deferred_schedule and history is None:
            raise ValueError("a deferred schedule needs the ledger's round history")
        self._history = history

    async def send(self, request: InboxRequest) -> ContactOutcome:
        """Attempt `request` under the retry policy and return its outcome."""
        self._events.emit(ContactStarted(request.campaign_id, request.contact_id))
        try:
            outcome = await self._attempt_loop(request)
        except Exception:
            # Every start has its finish (the in-flight gauge); the page handler releases it.
            crashed = ContactOutcome.released(request.campaign_id, request.contact_id, "crashed")
            self._events.emit(ContactFinished(crashed))
            raise
        self._events.emit(ContactFinished(outcome))
        return outcome

    async def _attempt_loop(self, request: InboxRequest) -> ContactOutcome:
        codes: list[str] = []
        probes_failed = 0  # attempts that were failed breaker probes: no retry used
        last_status: int | None = None
        while True:
            attempts = len(codes) + probes_failed
            blocked = await self._gate.blocker(request.campaign_id)
            if blocked is not None:
                return _released(request, attempts, last_status, blocked)
            probe = await self._inbox_admits(request, None)
            if isinstance(probe, str):
                return _released(request, attempts, last_status, probe)
            token = await self._take_token(request, first=not codes)
            if isinstance(token, str):
                if probe is not None:
                    await self._inbox.probe_abandoned(probe)
                return _released(request, attempts, last_status, token)
            self._events.emit(TokenWaited(token.waited_s))
            if probe is None and await self._inbox.held(request.inbox_id):
                # Held while we waited for the token. The token is spent: used after the hold,
                # many such tokens at once would break the inbox's `rate·t + burst`. Wait at
                # the gate again, then take a fresh one (no retry used).
                continue
            if probe is None and self._monotonic() > token.stale_at:
                # Woken too late (a stalled loop, a slow status read): sent now, it would
                # land together with on-time tokens. Take a fresh one (no retry used).
                continue
            result = await self._attempt(request, len(codes))
            last_status = result.status if result.status is not None else last_status
            if result.retry_after is not None:
                await self._inbox.retry_after(request.inbox_id, result)
            if probe is not None:
                await self._inbox.probe_finished(probe, result)
                if is_transient_failure(result):
                    probes_failed += 1
                    continue
            else:
                self._inbox.record(request.inbox_id, result)
            codes.append(result.code)
            attempts = len(codes) + probes_failed
            earlier = await self._earlier_rounds(request, codes)
            match decide(codes, result, self._policy, self._rng, self._wall_clock(), earlier):
                case Sent():
                    return ContactOutcome.sent(
                        request.campaign_id,
                        request.contact_id,
                        attempts=attempts,
                        last_status_code=result.status,
                    )
                case Fail(reason=reason, kind=kind):
                    self._events.emit(TerminalFailure(kind))
                    return ContactOutcome.failed(
                        request.campaign_id,
                        request.contact_id,
                        attempts=attempts,
                        reason=reason,
                        last_status_code=last_status,
                    )
                case Defer(delay_s=delay_s):
                    return ContactOutcome.deferred(
                        request.campaign_id,
                        request.contact_id,
                        codes=codes,
                        attempts=attempts,
                        delay_s=delay_s,
                        last_status_code=last_status,
                    )
                case Retry(delay_s=delay_s):
                    cut_short = await self._gate.sleep(request.campaign_id, delay_s)
                    if cut_short is not None:
                        self._events.emit(
                            RetryAborted(request.campaign_id, request.contact_id, cut_short)
                        )
                        return _released(request, attempts, last_status, cut_short)
                case unexpected:
                    assert_never(unexpected)

    async def _inbox_admits(
        self, request: InboxRequest, probe: Probe | None
    ) -> Probe | ReleaseCause | None:
        """The inbox gate's word: go (None), go as the probe, or why the contact is released."""
        if probe is not None or self._inbox.clear(request.inbox_id):
            return probe
        return await self._inbox.admit(request.campaign_id, request.inbox_id)

    async def _attempt(self, request: InboxRequest, retry_number: int) -> AttemptResult:
        """One POST under a process-wide HTTP slot, announced before and after."""
        async with self._http_slots:
            self._events.emit(AttemptStarted(retry_number))
            started = self._monotonic()
            result = await self._dispatcher.send(request)
        self._events.emit(
            AttemptFinished(
                request.campaign_id,
                request.contact_id,
                retry_number,
                result,
                self._monotonic() - started,
            )
        )
        return result

    async def _earlier_rounds(self, request: InboxRequest, codes: list[str]) -> EarlierRounds:
        """Read the contact's earlier rounds, only at the end of a round when rounds are on."""
        if (
            self._history is None
            or not self._policy.deferred_schedule
            or not is_last_of_round(codes, self._policy)
        ):
            return FIRST_ROUND
        return await self._history.earlier_rounds(request.campaign_id, request.contact_id)

    async def _take_token(self, request: InboxRequest, *, first: bool) -> Token | ReleaseCause:
        """The token taken, or why none was (halt, or none in time)."""
        started = self._monotonic()
        max_wait_s, too_late = self._token_bound(request, first)
        asking = asyncio.ensure_future(self._limiter.reserve(request.inbox_id, request.campaign_id))
        try:
            halted = await self._gate.sleep(request.campaign_id, max_wait_s, until=asking)
            answered = asking.done()
        finally:
            asking.cancel()  # no-op once answered; otherwise it leaves the limiter's queue
        if halted is not None or not answered:
            return halted or too_late
        reply = asking.result()
        due = self._monotonic() + reply.wait_s
        if reply.wait_s > 0:
            halted = await self._gate.sleep(request.campaign_id, reply.wait_s)
            if halted is not None:
                return halted
        return Token(self._monotonic() - started, due + reply.late_limit_s)

    def _token_bound(self, request: InboxRequest, first: bool) -> tuple[float, ReleaseCause]:
        """The longest token wait and the release cause past it: a first attempt also ends
        at its page's slice (`first_token_by`); a retry keeps RATE_LIMIT_MAX_WAIT_MS alone."""
        if first and request.first_token_by is not None:
            left_s = max(0.0, request.first_token_by - self._monotonic())
            if left_s < self._max_token_wait_s:
                return left_s, "deadline"
        return self._max_token_wait_s, "no_token"


def _released(
    request: InboxRequest, attempts: int, last_status: int | None, cause: ReleaseCause
) -> ContactOutcome:
    return ContactOutcome.released(
        request.campaign_id,
        request.contact_id,
        cause,
        attempts=attempts,
        last_status_code=last_status,
    )
