"""Retry policy of DESIGN.md §4 as pure functions: backoff math, classification, reason strings.

Nothing here sleeps, reads a clock or opens a socket; the caller passes `rng` and `now`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from sender.settings import JitterMode, Settings

TIMEOUT = "TIMEOUT"
DISPATCH_ERROR = "DISPATCH_ERROR"

ResultClass = Literal["2xx", "4xx", "5xx", "timeout", "error"]
TerminalKind = Literal["http_4xx", "exhausted_retries"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many retries, how long between them, and which 4xx count as transient."""

    retry_count: int = 3
    base_s: float = 1.0
    cap_s: float = 30.0
    jitter: JitterMode = "none"
    retryable_4xx: frozenset[int] = frozenset({408, 429})
    # DISPATCH_DEFERRED_SCHEDULE: seconds before each fresh round once a round is used up.
    deferred_schedule: tuple[float, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the `DISPATCH_*` settings describe."""
        return cls(
            retry_count=settings.dispatch_retry_count,
            base_s=settings.dispatch_backoff_base_ms / 1000,
            cap_s=settings.dispatch_backoff_cap_ms / 1000,
            jitter=settings.dispatch_backoff_jitter,
            retryable_4xx=settings.dispatch_retryable_4xx,
            deferred_schedule=settings.deferred_schedule_s,
        )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST to the inbox API came to.

    `code` is the HTTP status as a string (`"503"`), `TIMEOUT` or `DISPATCH_ERROR`;
    `status` is the HTTP status when one was received.
    """

    code: str
    status: int | None = None
    retry_after: str | None = None

    @classmethod
    def http(cls, status: int, retry_after: str | None = None) -> AttemptResult:
        """An attempt that got an HTTP response."""
        return cls(code=str(status), status=status, retry_after=retry_after)

    @property
    def result_class(self) -> ResultClass:
        """The bounded `result` label of `sender_dispatch_attempts_total`."""
        if self.code == TIMEOUT:
            return "timeout"
        if self.status is None:
            return "error"
        hundreds = self.status // 100
        if hundreds == 2:
            return "2xx"
        if hundreds == 4:
            return "4xx"
        if hundreds == 5:
            return "5xx"
        return "error"


@dataclass(frozen=True, slots=True)
class Sent:
    """The inbox accepted the message."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Transient failure: try again after `delay_s` (retry number `retry_number`, from 1)."""

    delay_s: float
    retry_number: int


@dataclass(frozen=True, slots=True)
class Defer:
    """This round's retries are used up: a fresh round (number `round_number`, from 2)
    starts `delay_s` from now, through the ledger, on any consumer."""

    delay_s: float
    round_number: int


@dataclass(frozen=True, slots=True)
class EarlierRounds:
    """What the ledger keeps of a contact's deferred rounds: how many, every attempt's code."""

    rounds: int = 0
    codes: tuple[str, ...] = ()


FIRST_ROUND = EarlierRounds()


@dataclass(frozen=True, slots=True)
class Fail:
    """Final failure with the ledger's reason string."""

    reason: str
    kind: TerminalKind


Decision = Sent | Retry | Defer | Fail


def backoff_delay(retry_number: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds before retry `retry_number` (1, 2, …): `min(base · 2^(n-1), cap)`, then jitter.

    Jitter `full` draws from `[0, d]`, `equal` from `[d/2, d]`, `none` returns `d`.
    """
    delay = doubling_delay(retry_number, policy.base_s, policy.cap_s)
    if policy.jitter == "full":
        return rng.uniform(0, delay)
    if policy.jitter == "equal":
        return delay / 2 + rng.uniform(0, delay / 2)
    return delay


def doubling_delay(retry_number: int, base_s: float, cap_s: float) -> float:
    """`min(base · 2^(n-1), cap)` for try n = 1, 2, …: every backoff of `sender` (contacts,
    infrastructure retries, task restarts) doubles this way."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    # Cap the exponent too, so a huge retry count never overflows the float.
    exponent = min(retry_number - 1, 64)
    return min(base_s * 2.0**exponent, cap_s)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or HTTP date); None if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def is_transient(result: AttemptResult, policy: RetryPolicy) -> bool:
    """5xx, timeouts, network errors, listed 4xx and unexpected (1xx/3xx) statuses are transient."""
    if result.status is None:
        return True
    if 400 <= result.status <= 499:
        return result.status in policy.retryable_4xx
    return not 200 <= result.status <= 299


def decide(
    codes: Sequence[str],
    result: AttemptResult,
    policy: RetryPolicy,
    rng: random.Random,
    now: datetime,
    earlier: EarlierRounds = FIRST_ROUND,
) -> Decision:
    """What follows an attempt; `codes` holds every attempt's code of this round, this one last.

    A round whose retries are used up defers to the next entry of the deferred schedule
    (`earlier.rounds` of them are done); after the last one the contact fails with every
    attempt's code of every round.
    """
    if result.status is not None and 200 <= result.status <= 299:
        return Sent()
    if not is_transient(result, policy):
        return Fail(reason=f"http_4xx: {result.status}", kind="http_4xx")
    retry_number = len(codes)
    if retry_number > policy.retry_count:
        if earlier.rounds < len(policy.deferred_schedule):
            return Defer(policy.deferred_schedule[earlier.rounds], round_number=earlier.rounds + 2)
        return Fail(reason=exhausted_reason([*earlier.codes, *codes]), kind="exhausted_retries")
    delay = backoff_delay(retry_number, policy, rng)
    asked = parse_retry_after(result.retry_after, now)
    if asked is not None:
        delay = min(max(delay, asked), policy.cap_s)
    return Retry(delay_s=delay, retry_number=retry_number)


def is_last_of_round(codes: Sequence[str], policy: RetryPolicy) -> bool:
    """True when the attempt whose code ends `codes` was this round's last retry."""
    return len(codes) > policy.retry_count


def exhausted_reason(codes: Sequence[str]) -> str:
    """`dispatch_exhausted_retries: ["503","DISPATCH_ERROR"]` — every attempt's code, in order."""
    return "dispatch_exhausted_retries: " + json.dumps(list(codes), separators=(",", ":"))
