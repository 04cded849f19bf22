"""Spec of the per-inbox breaker's pure state machine (DESIGN.md §11): no I/O, no clock."""

from __future__ import annotations

from sender.core.breaker import (
    Breaker,
    BreakerConfig,
    after_probe,
    after_window,
    blocks,
    is_transient_failure,
    may_probe,
    probing,
    should_open,
)
from sender.core.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult

CONFIG = BreakerConfig(
    window_s=10, min_attempts=20, failure_ratio=0.5, cooldown_s=5, cooldown_max_s=60
)
CLOSED = Breaker()


def test_5xx_timeouts_and_network_errors_are_the_inbox_s_fault() -> None:
    assert is_transient_failure(AttemptResult.http(503))
    assert is_transient_failure(AttemptResult.http(500))
    assert is_transient_failure(AttemptResult(code=TIMEOUT))
    assert is_transient_failure(AttemptResult(code=DISPATCH_ERROR))


def test_2xx_and_every_4xx_429_included_are_not_outages() -> None:
    for status in (200, 202, 400, 404, 408, 429):
        assert not is_transient_failure(AttemptResult.http(status))


def test_fewer_attempts_than_the_minimum_never_open_it() -> None:
    assert not should_open(19, 19, CONFIG)
    assert should_open(20, 10, CONFIG)
    assert not should_open(20, 9, CONFIG)


def test_a_minimum_of_zero_disables_the_breaker() -> None:
    off = BreakerConfig(min_attempts=0)
    assert not off.enabled
    assert not should_open(1000, 1000, off)
    assert after_window(CLOSED, 1000, 1000, 0.0, off) is None


def test_the_window_opens_a_closed_breaker_for_the_base_cooldown() -> None:
    opened = after_window(CLOSED, 40, 30, 100.0, CONFIG)
    assert opened == Breaker("open", 105.0, 5.0, 1)
    assert blocks(opened)


def test_the_window_never_reopens_an_open_or_half_open_breaker() -> None:
    opened = Breaker("open", 105.0, 5.0, 1)
    assert after_window(opened, 40, 40, 100.0, CONFIG) is None
    assert after_window(probing(opened), 40, 40, 100.0, CONFIG) is None


def test_one_probe_may_go_once_the_cooldown_is_over() -> None:
    opened = Breaker("open", 105.0, 5.0, 1)
    assert not may_probe(opened, 104.9)
    assert may_probe(opened, 105.0)
    assert probing(opened) == Breaker("half_open", 105.0, 5.0, 2)
    assert not may_probe(CLOSED, 1e9)


def test_a_failed_probe_reopens_with_the_cooldown_doubled_up_to_the_max() -> None:
    half_open = Breaker("half_open", 0.0, 5.0, 2)
    reopened = after_probe(half_open, False, 200.0, CONFIG)
    assert reopened == Breaker("open", 210.0, 10.0, 3)
    cooldowns = []
    breaker = reopened
    for _ in range(5):
        breaker = after_probe(probing(breaker), False, 200.0, CONFIG)
        cooldowns.append(breaker.cooldown_s)
    assert cooldowns == [20.0, 40.0, 60.0, 60.0, 60.0]


def test_a_successful_probe_closes_and_resets_the_cooldown() -> None:
    closed = after_probe(Breaker("half_open", 0.0, 40.0, 7), True, 200.0, CONFIG)
    assert closed == Breaker("closed", 0.0, 0.0, 8)
    assert not blocks(closed)
    assert after_window(closed, 40, 30, 300.0, CONFIG) == Breaker("open", 305.0, 5.0, 9)
