"""Frozen events the contact loop and the consumer emit; metrics and logs subscribe to them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sender.core.breaker import BreakerPhase
from sender.core.policy import AttemptResult, TerminalKind
from sender.core.ports import ContactOutcome, StopCause


@dataclass(frozen=True, slots=True)
class ContactStarted:
    """A contact took a concurrency slot and starts its attempts."""

    campaign_id: str
    contact_id: str


@dataclass(frozen=True, slots=True)
class TokenWaited:
    """A rate-limit token was granted after `seconds` (0 included)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """An attempt is about to be sent; `retry_number` is 0 for the first attempt."""

    retry_number: int


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """An attempt came back with `result` after `duration_s`."""

    campaign_id: str
    contact_id: str
    retry_number: int
    result: AttemptResult
    duration_s: float


@dataclass(frozen=True, slots=True)
class TerminalFailure:
    """A contact failed for good."""

    kind: TerminalKind


@dataclass(frozen=True, slots=True)
class RetryAborted:
    """A backoff sleep was cut short because the campaign was halted (or the process stops)."""

    campaign_id: str
    contact_id: str
    cause: StopCause


@dataclass(frozen=True, slots=True)
class ContactFinished:
    """A contact's outcome for this delivery is known (not yet committed)."""

    outcome: ContactOutcome


@dataclass(frozen=True, slots=True)
class CampaignAutoPaused:
    """This process paused a campaign whose recent outcomes were mostly `failed`."""

    campaign_id: str
    reason: str


PageOutcome = Literal["acked", "requeued", "dead"]


@dataclass(frozen=True, slots=True)
class PageSettled:
    """A delivery was settled: `acked`, `requeued` (continuation or redelivery) or `dead`."""

    outcome: PageOutcome


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """This process saw an inbox's breaker go from `was` to `to` (no inbox id: labels)."""

    was: BreakerPhase
    to: BreakerPhase


Event = (
    ContactStarted
    | TokenWaited
    | AttemptStarted
    | AttemptFinished
    | TerminalFailure
    | RetryAborted
    | ContactFinished
    | PageSettled
    | BreakerTransition
    | CampaignAutoPaused
)
Listener = Callable[[Event], None]


class EventBus:
    """Fans events out to listeners; a failing listener never breaks a send."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self._listeners = list(listeners or [])

    def subscribe(self, listener: Listener) -> None:
        """Add a listener."""
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        """Deliver `event` to every listener."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logging.getLogger(__name__).exception("event listener failed")
