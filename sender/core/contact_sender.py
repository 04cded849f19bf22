"""The per-contact attempt loop: token, attempt, pure decision, interruptible backoff.

Every I/O sits behind a port; time and randomness are injected, so unit tests are exact.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import assert_never

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
from sender.core.policy import Fail, Retry, RetryPolicy, Sent, decide
from sender.core.ports import (
    CampaignGate,
    ContactOutcome,
    Dispatcher,
    InboxRequest,
    RateLimiter,
    ReleaseCause,
)

log = logging.getLogger(__name__)


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
        last_status: int | None = None
        while True:
            blocked = await self._gate.blocker(request.campaign_id)
            if blocked is not None:
                return _released(request, codes, last_status, blocked)
            waited = await self._take_token(request, first=not codes)
            if isinstance(waited, str):
                return _released(request, codes, last_status, waited)
            self._events.emit(TokenWaited(waited))
            retry_number = len(codes)
            async with self._http_slots:
                self._events.emit(AttemptStarted(retry_number))
                started = self._monotonic()
                result = await self._dispatcher.send(request)
            codes.append(result.code)
            last_status = result.status if result.status is not None else last_status
            self._events.emit(
                AttemptFinished(
                    request.campaign_id,
                    request.contact_id,
                    retry_number,
                    result,
                    self._monotonic() - started,
                )
            )
            match decide(codes, result, self._policy, self._rng, self._wall_clock()):
                case Sent():
                    return ContactOutcome.sent(
                        request.campaign_id,
                        request.contact_id,
                        attempts=len(codes),
                        last_status_code=result.status,
                    )
                case Fail(reason=reason, kind=kind):
                    self._events.emit(TerminalFailure(kind))
                    return ContactOutcome.failed(
                        request.campaign_id,
                        request.contact_id,
                        attempts=len(codes),
                        reason=reason,
                        last_status_code=last_status,
                    )
                case Retry(delay_s=delay_s):
                    cut_short = await self._gate.sleep(request.campaign_id, delay_s)
                    if cut_short is not None:
                        self._events.emit(
                            RetryAborted(request.campaign_id, request.contact_id, cut_short)
                        )
                        return _released(request, codes, last_status, cut_short)
                case unexpected:
                    assert_never(unexpected)

    async def _take_token(self, request: InboxRequest, *, first: bool) -> float | ReleaseCause:
        """Seconds waited for a token, or why none was taken (halt, or none in time)."""
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
        if reply.wait_s > 0:
            halted = await self._gate.sleep(request.campaign_id, reply.wait_s)
            if halted is not None:
                return halted
        return self._monotonic() - started

    def _token_bound(self, request: InboxRequest, first: bool) -> tuple[float, ReleaseCause]:
        """The longest token wait and the release cause past it: a first attempt also ends
        at its page's slice (`first_token_by`); a retry keeps RATE_LIMIT_MAX_WAIT_MS alone."""
        if first and request.first_token_by is not None:
            left_s = max(0.0, request.first_token_by - self._monotonic())
            if left_s < self._max_token_wait_s:
                return left_s, "deadline"
        return self._max_token_wait_s, "no_token"


def _released(
    request: InboxRequest, codes: list[str], last_status: int | None, cause: ReleaseCause
) -> ContactOutcome:
    return ContactOutcome.released(
        request.campaign_id,
        request.contact_id,
        cause,
        attempts=len(codes),
        last_status_code=last_status,
    )
