"""Per-inbox GCRA bucket: the rate, the batch reservation every store answers, its math.

GCRA with period T = 1/rate and burst b: a slot reserved moves the bucket's theoretical
arrival time to `tat' = max(tat, now) + T`; it may be used at `tat' - tolerance`, where
the tolerance is `b·T` less a jitter allowance (`tolerance_s`). The bucket starts full,
and in any window of t seconds at most `rate·t + b` slots are used.

A store reserves a *batch*: consecutive slots whose use comes within a horizon from now,
shared between the campaigns asking by `fair_share.split_slots`. `grant_batch` is the
bucket's reference math, in integer microseconds, the same as the Redis Lua script
(`sender/adapters/gcra_batch.lua`) runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Rate:
    """Tokens per second (finite, > 0) and burst (≥ 1) of one inbox."""

    per_sec: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_sec) and self.per_sec > 0):
            raise ValueError(f"rate must be a finite number above 0, not {self.per_sec!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a whole number of at least 1, not {self.burst!r}")

    @property
    def period_s(self) -> float:
        """Seconds between two tokens at the steady rate."""
        return 1.0 / self.per_sec


def tolerance_s(rate: Rate, jitter_allowance_s: float) -> float:
    """How far ahead of its steady slot a token may be used: `burst · T`, less an allowance.

    A token is counted when granted but lands at the inbox a little later, and not every
    request takes equally long to get there (a new connection, a late wake-up). Granting
    the burst `jitter_allowance_s` short keeps every window *at the inbox* within
    `rate·t + burst` when those delays differ by up to the allowance. The steady rate is
    unchanged, and at least one token is always allowed.
    """
    return rate.burst * rate.period_s - kept_allowance_s(rate, jitter_allowance_s)


def kept_allowance_s(rate: Rate, jitter_allowance_s: float) -> float:
    """The part of the allowance the burst can give up: all of it, or `(burst - 1)·T`."""
    return min(jitter_allowance_s, (rate.burst - 1) * rate.period_s)


def late_limit_s(rate: Rate, jitter_allowance_s: float) -> float:
    """How late after its slot a token may still be used: the allowance the tolerance kept
    free, and at least one period."""
    return max(kept_allowance_s(rate, jitter_allowance_s), rate.period_s)


@dataclass(frozen=True, slots=True)
class BatchAsk:
    """One batch reservation: the bucket's shape, the fair-share quantum (slots), and how
    many slots each campaign wants, in the order they are served here."""

    period_s: float
    tolerance_s: float
    horizon_s: float
    quantum: int
    wants: tuple[tuple[str, int], ...]

    @property
    def wanted(self) -> int:
        """Slots wanted in all."""
        return sum(want for _, want in self.wants)


@dataclass(frozen=True, slots=True)
class BatchReply:
    """What one batch reservation got.

    `granted[j]` slots for the j-th campaign asked; the i-th slot of all (from 1) is usable
    at `first_tat_minus_now_s + i·T - tolerance` from now. When fewer than wanted,
    `retry_s` is how long to wait before asking again.
    """

    granted: tuple[int, ...]
    first_tat_minus_now_s: float
    retry_s: float

    @property
    def total(self) -> int:
        """Slots granted in all."""
        return sum(self.granted)


class BucketStore(Protocol):
    """Where buckets live (Redis for every pod, memory for one); it keeps its own clock."""

    async def reserve_batch(self, inbox_id: str, ask: BatchAsk) -> BatchReply:
        """Reserve what `ask` wants of slots usable within its horizon, shared fairly.

        Raises `DependencyUnavailable` when the store cannot be reached (no slot granted).
        """
        ...


@dataclass(frozen=True, slots=True)
class BatchMath:
    """`grant_batch`'s answer: the bucket's new tat (None: unchanged) and the reply, in µs."""

    new_tat_us: int | None
    granted: int
    first_minus_now_us: int
    retry_us: int


def grant_batch(
    tat_us: int | None, now_us: int, period_us: int, tolerance_us: int, horizon_us: int, wanted: int
) -> BatchMath:
    """Reserve up to `wanted` slots, each used at `tat + period - tolerance` within the horizon."""
    first = now_us if tat_us is None else max(tat_us, now_us)
    granted = min(wanted, fitting_slots(tat_us, now_us, period_us, tolerance_us, horizon_us))
    tat = first + granted * period_us
    retry = retry_us(tat, now_us, period_us, tolerance_us, horizon_us) if granted < wanted else 0
    return BatchMath(tat if granted else None, granted, first - now_us, retry)


def retry_us(tat_us: int, now_us: int, period_us: int, tolerance_us: int, horizon_us: int) -> int:
    """From now, how long until half the horizon is free again (after a short batch)."""
    return max(0, (2 * (tat_us + period_us - tolerance_us - now_us) - horizon_us) // 2)


def fitting_slots(
    tat_us: int | None, now_us: int, period_us: int, tolerance_us: int, horizon_us: int
) -> int:
    """How many more slots the bucket can grant whose use comes within the horizon."""
    first = now_us if tat_us is None else max(tat_us, now_us)
    room = horizon_us + tolerance_us + now_us - first  # slot n fits while n·period <= room
    return max(0, room // period_us)


def batch_args_us(period_s: float, tolerance_s: float, horizon_s: float) -> tuple[int, int, int]:
    """A reservation's period, tolerance and horizon in whole µs, as every store takes them."""
    return max(1, whole_us(period_s)), whole_us(tolerance_s), whole_us(horizon_s)


def whole_us(seconds: float) -> int:
    """Seconds in whole microseconds, the unit of every store's math."""
    return round(seconds * 1e6)
