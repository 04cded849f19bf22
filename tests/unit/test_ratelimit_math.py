"""Spec of the GCRA token math and the in-process limiter (DESIGN.md §4, §6 INBOX_RATE_PER_SEC)."""

from __future__ import annotations

import bisect
import random

import pytest

from sender.core.ports import TokenReply
from sender.core.ratelimit import LocalRateLimiter, Rate, Reservation, reserve

# Powers of two keep the float arithmetic exact: period 0.25 s, burst 2.
QUARTER = Rate(per_sec=4.0, burst=2)
NO_LIMIT = float("inf")


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _waits(rate: Rate, times: list[float], max_wait_s: float = NO_LIMIT) -> list[float | None]:
    """Reserve at each of `times` in turn from a full bucket; None where refused."""
    tat = times[0]
    waits: list[float | None] = []
    for now in times:
        granted = reserve(tat, now, rate, max_wait_s)
        if granted is None:
            waits.append(None)
        else:
            waits.append(granted.wait_s)
            tat = granted.new_tat
    return waits


# --- reserve ---------------------------------------------------------------------------------


def test_period_is_the_inverse_of_the_rate() -> None:
    assert Rate(per_sec=20, burst=20).period_s == 0.05
    assert QUARTER.period_s == 0.25


def test_a_full_bucket_grants_burst_tokens_at_once() -> None:
    assert _waits(QUARTER, [0.0, 0.0]) == [0.0, 0.0]


def test_after_the_burst_tokens_come_one_per_period() -> None:
    assert _waits(QUARTER, [0.0] * 6) == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_first_reservation_moves_tat_one_period_ahead() -> None:
    assert reserve(10.0, 10.0, QUARTER, NO_LIMIT) == Reservation(wait_s=0.0, new_tat=10.25)


def test_a_drained_bucket_refills_one_token_per_period() -> None:
    # burst of 2 at t=0, then a token at 0.25 and 0.5 without waiting
    assert _waits(QUARTER, [0.0, 0.0, 0.25, 0.5]) == [0.0, 0.0, 0.0, 0.0]
    assert _waits(QUARTER, [0.0, 0.0, 0.25, 0.25]) == [0.0, 0.0, 0.0, 0.25]


def test_an_idle_bucket_refills_to_the_burst_and_no_further() -> None:
    times = [0.0, 0.0, 0.0, 1000.0, 1000.0, 1000.0]

    assert _waits(QUARTER, times) == [0.0, 0.0, 0.25, 0.0, 0.0, 0.25]


def test_a_reservation_beyond_max_wait_is_refused() -> None:
    drained_tat = 0.5  # two tokens taken at t=0

    assert reserve(drained_tat, 0.0, QUARTER, max_wait_s=0.2) is None


def test_a_reservation_exactly_at_max_wait_is_granted() -> None:
    assert reserve(0.5, 0.0, QUARTER, max_wait_s=0.25) == Reservation(wait_s=0.25, new_tat=0.75)


def test_a_refused_reservation_takes_no_token() -> None:
    # the third request is refused; the fourth gets the slot it would have had
    assert _waits(QUARTER, [0.0, 0.0, 0.0, 0.0], max_wait_s=0.2) == [0.0, 0.0, None, None]
    assert _waits(QUARTER, [0.0, 0.0, 0.0, 0.25], max_wait_s=0.2) == [0.0, 0.0, None, 0.0]


def test_zero_max_wait_only_grants_immediate_tokens() -> None:
    assert _waits(QUARTER, [0.0, 0.0, 0.0, 0.25], max_wait_s=0.0) == [0.0, 0.0, None, 0.0]


@pytest.mark.parametrize(("seed", "max_wait_s"), [(1, NO_LIMIT), (2, 1.0), (3, 0.0), (4, 5.0)])
def test_no_window_ever_gets_more_than_rate_times_t_plus_burst(
    seed: int, max_wait_s: float
) -> None:
    rate = Rate(per_sec=5.0, burst=3)
    rng = random.Random(seed)
    # 80 clumps of 6 requests at random times in a minute: far more than the rate allows
    clumps = [rng.uniform(0, 60) for _ in range(80)]
    times = sorted(start + rng.uniform(0, 0.3) for start in clumps for _ in range(6))
    tat = times[0]
    used: list[float] = []
    for now in times:
        granted = reserve(tat, now, rate, max_wait_s)
        if granted is not None:
            assert 0.0 <= granted.wait_s <= max_wait_s
            tat = granted.new_tat
            used.append(now + granted.wait_s)
    used.sort()

    assert len(used) > rate.per_sec * 60 / 2
    for window_s in (0.0, 0.1, 0.2, 0.5, 1.0, 3.7, 10.0, 60.0):
        limit = rate.per_sec * window_s + rate.burst + 1e-9
        busiest = max(
            bisect.bisect_right(used, start + window_s) - i for i, start in enumerate(used)
        )
        assert busiest <= limit, (window_s, busiest)


# --- LocalRateLimiter ------------------------------------------------------------------------


async def test_local_limiter_answers_the_computed_waits_without_sleeping() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(QUARTER, monotonic=clock)

    replies = [await limiter.reserve("inbox-1", max_wait_s=30.0) for _ in range(5)]

    assert [reply.wait_s for reply in replies] == [0.0, 0.0, 0.25, 0.5, 0.75]
    assert all(reply.reserved for reply in replies)
    assert clock.now == 100.0


async def test_local_limiter_paces_a_caller_that_waits_out_each_reservation() -> None:
    clock = FakeClock(0.0)
    limiter = LocalRateLimiter(QUARTER, monotonic=clock)

    waits = []
    for _ in range(5):
        reply = await limiter.reserve("inbox-1", max_wait_s=30.0)
        clock.advance(reply.wait_s)
        waits.append(reply.wait_s)

    assert waits == [0.0, 0.0, 0.25, 0.25, 0.25]
    assert clock.now == 0.75


async def test_local_limiter_refuses_beyond_max_wait_without_taking_a_token() -> None:
    limiter = LocalRateLimiter(QUARTER, monotonic=FakeClock())
    await limiter.reserve("inbox-1", max_wait_s=0.0)
    await limiter.reserve("inbox-1", max_wait_s=0.0)

    refused = await limiter.reserve("inbox-1", max_wait_s=0.125)
    granted = await limiter.reserve("inbox-1", max_wait_s=1.0)

    assert refused == TokenReply(reserved=False, wait_s=0.125)
    assert granted == TokenReply(reserved=True, wait_s=0.25)


async def test_local_limiter_refusal_reports_only_the_wait_asked_for() -> None:
    clock = FakeClock(0.0)
    limiter = LocalRateLimiter(QUARTER, monotonic=clock)
    for _ in range(6):  # slots at 0, 0, 0.25, 0.5, 0.75, 1.0: the next is at 1.25
        await limiter.reserve("inbox-1", max_wait_s=30.0)

    refused = await limiter.reserve("inbox-1", max_wait_s=0.25)

    assert refused == TokenReply(reserved=False, wait_s=0.25)  # not when a token would come
    assert clock.now == 0.0


async def test_local_limiter_holds_no_slot_for_a_refused_caller() -> None:
    clock = FakeClock(0.0)
    limiter = LocalRateLimiter(QUARTER, monotonic=clock)
    for _ in range(6):  # the next slot is at 1.25
        await limiter.reserve("inbox-1", max_wait_s=30.0)

    refused = await limiter.reserve("inbox-1", max_wait_s=0.25)
    patient = await limiter.reserve("inbox-1", max_wait_s=30.0)

    assert refused.reserved is False
    assert patient == TokenReply(reserved=True, wait_s=1.25)  # the slot nobody held


async def test_local_limiter_grants_once_the_slot_comes_within_max_wait() -> None:
    clock = FakeClock(0.0)
    limiter = LocalRateLimiter(QUARTER, monotonic=clock)
    for _ in range(6):  # the next slot is at 1.25
        await limiter.reserve("inbox-1", max_wait_s=30.0)

    clock.advance(0.75)
    early = await limiter.reserve("inbox-1", max_wait_s=0.25)
    clock.advance(0.25)
    in_time = await limiter.reserve("inbox-1", max_wait_s=0.25)

    assert early == TokenReply(reserved=False, wait_s=0.25)
    assert in_time == TokenReply(reserved=True, wait_s=0.25)
    assert clock.now + in_time.wait_s == 1.25


async def test_local_limiter_keeps_one_bucket_per_inbox() -> None:
    limiter = LocalRateLimiter(QUARTER, monotonic=FakeClock())
    for _ in range(2):
        await limiter.reserve("busy", max_wait_s=30.0)

    assert await limiter.reserve("busy", max_wait_s=30.0) == TokenReply(True, 0.25)
    assert await limiter.reserve("quiet", max_wait_s=30.0) == TokenReply(True, 0.0)


async def test_set_rate_overrides_one_inbox_only() -> None:
    limiter = LocalRateLimiter(QUARTER, monotonic=FakeClock())
    limiter.set_rate("slow", Rate(per_sec=1.0, burst=1))

    slow = [await limiter.reserve("slow", max_wait_s=30.0) for _ in range(3)]
    other = [await limiter.reserve("other", max_wait_s=30.0) for _ in range(3)]

    assert [reply.wait_s for reply in slow] == [0.0, 1.0, 2.0]
    assert [reply.wait_s for reply in other] == [0.0, 0.0, 0.25]


async def test_set_rate_with_a_bigger_burst_applies_to_that_inbox() -> None:
    limiter = LocalRateLimiter(QUARTER, monotonic=FakeClock())
    limiter.set_rate("big", Rate(per_sec=2.0, burst=4))

    replies = [await limiter.reserve("big", max_wait_s=30.0) for _ in range(6)]

    assert [reply.wait_s for reply in replies] == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0]


async def test_an_overridden_inbox_refuses_on_its_own_rate() -> None:
    limiter = LocalRateLimiter(QUARTER, monotonic=FakeClock())
    limiter.set_rate("slow", Rate(per_sec=1.0, burst=1))
    await limiter.reserve("slow", max_wait_s=0.0)

    assert await limiter.reserve("slow", max_wait_s=0.5) == TokenReply(False, 0.5)
    assert await limiter.reserve("other", max_wait_s=0.0) == TokenReply(True, 0.0)
