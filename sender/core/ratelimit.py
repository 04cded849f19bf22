"""Per-inbox rate limiting: GCRA reservation math (pure) and an in-process limiter.

GCRA with period T = 1/rate and burst b: a token reserved at `now` moves the bucket's
theoretical arrival time to `tat' = max(tat, now) + T`; it may be used at
`tat' - b·T`. The bucket starts full, and in any window of t seconds at most
`rate·t + b` tokens are used. A waiter learns its slot from the reservation and
sleeps until then, so no one polls. Limiters only answer; the caller sleeps (so a
pause or shutdown can cut the wait short).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sender.core.ports import TokenReply


@dataclass(frozen=True, slots=True)
class Rate:
    """Tokens per second and burst of one inbox."""

    per_sec: float
    burst: int

    @property
    def period_s(self) -> float:
        """Seconds between two tokens at the steady rate."""
        return 1.0 / self.per_sec


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted token usable after `wait_s`, and the bucket's new theoretical arrival time."""

    wait_s: float
    new_tat: float


def tolerance_s(rate: Rate, jitter_allowance_s: float) -> float:
    """How far ahead of its steady slot a token may be used: `burst · T`, less an allowance.

    A token is counted when granted but lands at the inbox a little later, and not every
    request takes equally long to get there (a new connection, a late wake-up). Granting
    the burst `jitter_allowance_s` short keeps every window *at the inbox* within
    `rate·t + burst` when those delays differ by up to the allowance. The steady rate is
    unchanged, and at least one token is always allowed.
    """
    return rate.burst * rate.period_s - min(jitter_allowance_s, (rate.burst - 1) * rate.period_s)


def reserve(tat: float, now: float, rate: Rate, max_wait_s: float) -> Reservation | None:
    """Reserve the next token, or None when it would come later than `max_wait_s` from now."""
    new_tat = max(tat, now) + rate.period_s
    wait_s = max(0.0, new_tat - rate.burst * rate.period_s - now)
    if wait_s > max_wait_s:
        return None
    return Reservation(wait_s=wait_s, new_tat=new_tat)


class LocalRateLimiter:
    """In-process GCRA limiter: exact for one process (the Redis one is exact across pods)."""

    def __init__(self, default: Rate, monotonic: Callable[[], float]) -> None:
        self._default = default
        self._overrides: dict[str, Rate] = {}
        self._tat: dict[str, float] = {}
        self._monotonic = monotonic

    def set_rate(self, inbox_id: str, rate: Rate) -> None:
        """Override one inbox's rate."""
        self._overrides[inbox_id] = rate

    async def reserve(self, inbox_id: str, max_wait_s: float) -> TokenReply:
        """Reserve the next token if its slot comes within `max_wait_s`."""
        now = self._monotonic()
        rate = self._overrides.get(inbox_id, self._default)
        granted = reserve(self._tat.get(inbox_id, now), now, rate, max_wait_s)
        if granted is None:
            return TokenReply(reserved=False, wait_s=max_wait_s)
        self._tat[inbox_id] = granted.new_tat
        return TokenReply(reserved=True, wait_s=granted.wait_s)
