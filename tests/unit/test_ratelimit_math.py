"""Spec of the GCRA bucket math every store runs (DESIGN.md §4, §6 INBOX_RATE_PER_SEC)."""

from __future__ import annotations

import bisect
import math
import random

import pytest

from sender.core.ratelimit import BatchMath, Rate, batch_args_us, grant_batch, tolerance_s

# Whole microseconds, as stores take them: period 250 ms and burst 2, horizon 500 ms.
PERIOD = 250_000
FULL_BURST = 2 * PERIOD
HORIZON = 500_000
NOW = 1_000_000_000


# --- Rate ------------------------------------------------------------------------------------


def test_period_is_the_inverse_of_the_rate() -> None:
    assert Rate(per_sec=20, burst=20).period_s == 0.05
    assert Rate(per_sec=4.0, burst=2).period_s == 0.25


@pytest.mark.parametrize("per_sec", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_a_rate_that_is_not_a_finite_positive_number_is_refused(per_sec: float) -> None:
    with pytest.raises(ValueError, match="rate must be a finite number above 0"):
        Rate(per_sec=per_sec, burst=1)


@pytest.mark.parametrize("burst", [0, -3, True, 1.5])
def test_a_burst_below_one_or_not_whole_is_refused(burst: int) -> None:
    with pytest.raises(ValueError, match="burst must be a whole number of at least 1"):
        Rate(per_sec=1.0, burst=burst)


def test_the_smallest_valid_rate_and_burst_are_accepted() -> None:
    assert Rate(per_sec=0.001, burst=1).period_s == pytest.approx(1000.0)


# --- tolerance -------------------------------------------------------------------------------


def test_without_an_allowance_the_whole_burst_may_be_used_ahead() -> None:
    assert tolerance_s(Rate(per_sec=4, burst=2), 0.0) == 0.5


def test_the_allowance_comes_off_the_burst() -> None:
    assert tolerance_s(Rate(per_sec=8, burst=4), 0.25) == 0.25


def test_the_allowance_always_leaves_one_token() -> None:
    assert tolerance_s(Rate(per_sec=4, burst=2), 10.0) == 0.25
    assert tolerance_s(Rate(per_sec=4, burst=1), 0.1) == 0.25


def test_arguments_go_to_stores_in_whole_microseconds_with_a_period_of_at_least_one() -> None:
    assert batch_args_us(0.25, 0.5, 0.5) == (250_000, 500_000, 500_000)
    assert batch_args_us(1e-9, 0.0, 0.5) == (1, 0, 500_000)


# --- grant_batch -----------------------------------------------------------------------------


def test_a_new_bucket_grants_the_burst_at_once_and_says_when_to_ask_again() -> None:
    got = grant_batch(None, NOW, PERIOD, FULL_BURST, horizon_us=0, wanted=3)

    # two slots usable now; the third would be usable at +250 ms, half of no horizon
    assert got == BatchMath(
        new_tat_us=NOW + 2 * PERIOD, granted=2, first_minus_now_us=0, retry_us=PERIOD
    )


def test_the_horizon_grants_the_slots_usable_within_it() -> None:
    got = grant_batch(None, NOW, PERIOD, FULL_BURST, HORIZON, wanted=10)

    # usable at 0, 0, 250 ms, 500 ms; ask again when the next (750 ms) is half a horizon ahead
    assert got == BatchMath(NOW + 4 * PERIOD, 4, 0, retry_us=750_000 - HORIZON // 2)


def test_as_many_as_wanted_leaves_no_retry() -> None:
    assert grant_batch(None, NOW, PERIOD, FULL_BURST, HORIZON, wanted=3) == BatchMath(
        NOW + 3 * PERIOD, 3, 0, 0
    )


def test_a_bucket_ahead_of_now_reports_how_far_and_grants_from_there() -> None:
    tat = NOW + 3 * PERIOD  # three slots taken at NOW

    got = grant_batch(tat, NOW, PERIOD, FULL_BURST, HORIZON, wanted=1)

    # the slot is usable at tat + period - tolerance = NOW + 500 ms: just within the horizon
    assert got == BatchMath(tat + PERIOD, 1, first_minus_now_us=3 * PERIOD, retry_us=0)


def test_nothing_fits_the_horizon_changes_nothing() -> None:
    tat = NOW + 8 * PERIOD

    got = grant_batch(tat, NOW, PERIOD, FULL_BURST, HORIZON, wanted=5)

    assert got == BatchMath(
        None, 0, 8 * PERIOD, retry_us=8 * PERIOD + PERIOD - FULL_BURST - 250_000
    )


def test_an_idle_bucket_refills_to_the_burst_and_no_further() -> None:
    long_ago = NOW - 3600 * 1_000_000

    got = grant_batch(long_ago, NOW, PERIOD, FULL_BURST, horizon_us=0, wanted=5)

    assert (got.granted, got.first_minus_now_us, got.new_tat_us) == (2, 0, NOW + 2 * PERIOD)


def test_retry_is_never_negative() -> None:
    # a horizon of a minute and one slot wanted beyond it cannot give a negative pause
    got = grant_batch(NOW + 10**9, NOW, PERIOD, FULL_BURST, 60_000_000, wanted=1)

    assert got.granted == 0
    assert got.retry_us >= 0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_no_window_ever_gets_more_than_rate_times_t_plus_burst(seed: int) -> None:
    rate = Rate(per_sec=5.0, burst=3)
    period_us, tolerance_us, horizon_us = batch_args_us(rate.period_s, 3 * rate.period_s, 0.5)
    rng = random.Random(seed)
    # batches of 1-8 slots asked at random times in a minute: far more than the rate allows
    asks = sorted(round(rng.uniform(0, 60) * 1e6) for _ in range(200))
    tat: int | None = None
    used: list[float] = []
    for now in asks:
        got = grant_batch(tat, now, period_us, tolerance_us, horizon_us, rng.randint(1, 8))
        tat = got.new_tat_us if got.new_tat_us is not None else tat
        first = now + got.first_minus_now_us
        for i in range(1, got.granted + 1):
            use = max(now, first + i * period_us - tolerance_us)
            assert use - now <= horizon_us
            used.append(use / 1e6)
    used.sort()

    assert len(used) > rate.per_sec * 60 / 2
    for window_s in (0.0, 0.1, 0.2, 0.5, 1.0, 3.7, 10.0, 60.0):
        limit = rate.per_sec * window_s + rate.burst + 1e-9
        busiest = max(
            bisect.bisect_right(used, start + window_s) - i for i, start in enumerate(used)
        )
        assert busiest <= limit, (window_s, busiest)
