"""Spec of the pure retry policy (DESIGN.md §4): backoff math, decisions, reason strings."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from sender.core.policy import (
    DISPATCH_ERROR,
    TIMEOUT,
    AttemptResult,
    Decision,
    Fail,
    Retry,
    RetryPolicy,
    Sent,
    backoff_delay,
    decide,
    exhausted_reason,
    parse_retry_after,
)
from sender.settings import Settings

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
DEFAULT = RetryPolicy()  # 3 retries, 1 s base, 30 s cap, no jitter, 408/429 retryable
STRICT = RetryPolicy(retryable_4xx=frozenset())


def _decide(
    result: AttemptResult, earlier: Sequence[str] = (), policy: RetryPolicy = DEFAULT
) -> Decision:
    """The decision after `result`, with `earlier` attempts' codes before it."""
    return decide([*earlier, result.code], result, policy, random.Random(0), NOW)


def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


# --- backoff_delay ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_number", "expected_s"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)]
)
def test_backoff_doubles_from_the_base(retry_number: int, expected_s: float) -> None:
    assert backoff_delay(retry_number, DEFAULT, random.Random(0)) == expected_s


@pytest.mark.parametrize(
    ("retry_number", "expected_s"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (5, 5.0)]
)
def test_backoff_stops_growing_at_the_cap(retry_number: int, expected_s: float) -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=5.0)

    assert backoff_delay(retry_number, policy, random.Random(0)) == expected_s


def test_backoff_scales_with_the_base() -> None:
    policy = RetryPolicy(base_s=0.25, cap_s=30.0)

    assert [backoff_delay(n, policy, random.Random(0)) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]


@pytest.mark.parametrize("retry_number", [0, -1, -100])
def test_retry_number_below_one_is_rejected(retry_number: int) -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_delay(retry_number, DEFAULT, random.Random(0))


@pytest.mark.parametrize("retry_number", [65, 1_100, 10**6, 10**18])
def test_huge_retry_numbers_do_not_overflow_and_stay_at_the_cap(retry_number: int) -> None:
    delay = backoff_delay(retry_number, DEFAULT, random.Random(0))

    assert math.isfinite(delay)
    assert delay == 30.0


def test_full_jitter_stays_within_zero_and_the_delay() -> None:
    policy = RetryPolicy(jitter="full")
    rng = random.Random(1234)

    draws = [backoff_delay(3, policy, rng) for _ in range(2000)]

    assert all(0.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 0.5
    assert max(draws) > 3.5


def test_equal_jitter_stays_within_half_and_the_delay() -> None:
    policy = RetryPolicy(jitter="equal")
    rng = random.Random(1234)

    draws = [backoff_delay(3, policy, rng) for _ in range(2000)]

    assert all(2.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 2.25
    assert max(draws) > 3.75


def test_jitter_applies_to_the_capped_delay() -> None:
    policy = RetryPolicy(cap_s=5.0, jitter="full")
    rng = random.Random(7)

    assert all(0.0 <= backoff_delay(40, policy, rng) <= 5.0 for _ in range(500))


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(jitter="full")

    first = [backoff_delay(2, policy, random.Random(42)) for _ in range(3)]

    assert first == [random.Random(42).uniform(0, 2.0)] * 3


def test_no_jitter_is_exact_and_draws_nothing_from_the_rng() -> None:
    rng = random.Random(5)
    before = rng.getstate()

    assert [backoff_delay(n, DEFAULT, rng) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert rng.getstate() == before


# --- decide: sent and immediate failures -----------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_sent(status: int) -> None:
    assert _decide(AttemptResult.http(status)) == Sent()


def test_2xx_after_failures_is_sent() -> None:
    assert _decide(AttemptResult.http(200), earlier=["503", "TIMEOUT"]) == Sent()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 499])
def test_other_4xx_fails_at_once_with_http_4xx_reason(status: int) -> None:
    assert _decide(AttemptResult.http(status)) == Fail(
        reason=f"http_4xx: {status}", kind="http_4xx"
    )


def test_400_fails_even_after_transient_failures_with_retries_left() -> None:
    assert _decide(AttemptResult.http(400), earlier=["503"]) == Fail(
        reason="http_4xx: 400", kind="http_4xx"
    )


def test_non_retryable_4xx_ignores_retry_after() -> None:
    assert _decide(AttemptResult.http(400, retry_after="5")) == Fail(
        reason="http_4xx: 400", kind="http_4xx"
    )


# --- decide: transient failures --------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_are_retried_by_default(status: int) -> None:
    assert _decide(AttemptResult.http(status)) == Retry(delay_s=1.0, retry_number=1)


def test_429_fails_fast_when_no_4xx_is_retryable() -> None:
    assert _decide(AttemptResult.http(429), policy=STRICT) == Fail(
        reason="http_4xx: 429", kind="http_4xx"
    )


def test_only_the_listed_4xx_codes_are_retried() -> None:
    policy = RetryPolicy(retryable_4xx=frozenset({409}))

    assert _decide(AttemptResult.http(409), policy=policy) == Retry(delay_s=1.0, retry_number=1)
    assert _decide(AttemptResult.http(429), policy=policy) == Fail(
        reason="http_4xx: 429", kind="http_4xx"
    )


@pytest.mark.parametrize(
    "result",
    [
        AttemptResult.http(500),
        AttemptResult.http(502),
        AttemptResult.http(503),
        AttemptResult.http(504),
        AttemptResult.http(599),
        AttemptResult(code=TIMEOUT),
        AttemptResult(code=DISPATCH_ERROR),
    ],
    ids=lambda r: r.code,
)
def test_5xx_timeout_and_dispatch_error_are_retried(result: AttemptResult) -> None:
    assert _decide(result) == Retry(delay_s=1.0, retry_number=1)


@pytest.mark.parametrize("status", [100, 301, 302, 304, 307])
def test_1xx_and_3xx_are_treated_as_transient(status: int) -> None:
    assert _decide(AttemptResult.http(status)) == Retry(delay_s=1.0, retry_number=1)


def test_retry_number_and_delay_follow_the_attempts_so_far() -> None:
    decisions = [_decide(AttemptResult.http(503), earlier=["503"] * before) for before in range(3)]

    assert decisions == [
        Retry(delay_s=1.0, retry_number=1),
        Retry(delay_s=2.0, retry_number=2),
        Retry(delay_s=4.0, retry_number=3),
    ]


# --- decide: exhaustion ----------------------------------------------------------------------


def test_503_on_the_fourth_attempt_exhausts_the_default_policy() -> None:
    assert _decide(AttemptResult.http(503), earlier=["503", "503", "503"]) == Fail(
        reason='dispatch_exhausted_retries: ["503","503","503","503"]',
        kind="exhausted_retries",
    )


def test_retry_count_zero_exhausts_on_the_first_failure() -> None:
    policy = RetryPolicy(retry_count=0)

    assert _decide(AttemptResult.http(503), policy=policy) == Fail(
        reason='dispatch_exhausted_retries: ["503"]', kind="exhausted_retries"
    )


def test_retry_count_zero_still_fails_4xx_as_http_4xx() -> None:
    policy = RetryPolicy(retry_count=0)

    assert _decide(AttemptResult.http(404), policy=policy) == Fail(
        reason="http_4xx: 404", kind="http_4xx"
    )


def test_exhaustion_reason_lists_every_code_in_order_as_compact_json() -> None:
    decision = _decide(AttemptResult.http(503), earlier=["503", "DISPATCH_ERROR", "504"])

    assert decision == Fail(
        reason='dispatch_exhausted_retries: ["503","DISPATCH_ERROR","504","503"]',
        kind="exhausted_retries",
    )


def test_exhaustion_reason_carries_a_json_array_of_strings() -> None:
    reason = exhausted_reason(["TIMEOUT", "429", "DISPATCH_ERROR"])
    prefix, _, payload = reason.partition(": ")

    assert prefix == "dispatch_exhausted_retries"
    assert json.loads(payload) == ["TIMEOUT", "429", "DISPATCH_ERROR"]
    assert " " not in payload


def test_more_retries_means_more_attempts_before_exhaustion() -> None:
    policy = RetryPolicy(retry_count=5, cap_s=8.0)

    assert _decide(AttemptResult.http(503), ["503"] * 4, policy) == Retry(8.0, retry_number=5)
    assert isinstance(_decide(AttemptResult.http(503), ["503"] * 5, policy), Fail)


# --- decide: Retry-After ---------------------------------------------------------------------


def test_retry_after_seconds_longer_than_backoff_sets_the_delay() -> None:
    assert _decide(AttemptResult.http(503, retry_after="10")) == Retry(10.0, retry_number=1)


def test_retry_after_on_429_sets_the_delay() -> None:
    assert _decide(AttemptResult.http(429, retry_after="7")) == Retry(7.0, retry_number=1)


def test_retry_after_shorter_than_backoff_keeps_the_backoff() -> None:
    result = AttemptResult.http(503, retry_after="1")

    assert _decide(result, earlier=["503", "503"]) == Retry(4.0, retry_number=3)


def test_retry_after_http_date_sets_the_delay_from_now() -> None:
    result = AttemptResult.http(503, retry_after=_http_date(NOW + timedelta(seconds=12)))

    assert _decide(result) == Retry(12.0, retry_number=1)


def test_retry_after_http_date_in_the_past_keeps_the_backoff() -> None:
    result = AttemptResult.http(503, retry_after=_http_date(NOW - timedelta(hours=1)))

    assert _decide(result) == Retry(1.0, retry_number=1)


@pytest.mark.parametrize(
    "retry_after", ["3600", "99999999999999999999", _http_date(NOW + timedelta(hours=2))]
)
def test_retry_after_is_clamped_to_the_cap(retry_after: str) -> None:
    result = AttemptResult.http(503, retry_after=retry_after)

    assert _decide(result) == Retry(30.0, retry_number=1)


@pytest.mark.parametrize(
    "retry_after", ["", "   ", "soon", "-5", "1.5", "5s", "Mon, 99 Foo 2024 99:99:99 GMT"]
)
def test_bad_retry_after_is_ignored(retry_after: str) -> None:
    result = AttemptResult.http(503, retry_after=retry_after)

    assert _decide(result) == Retry(1.0, retry_number=1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("garbage", None),
        (_http_date(NOW + timedelta(seconds=30)), 30.0),
        ("Wed, 01 May 2024 12:00:45 GMT", 45.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# --- AttemptResult ---------------------------------------------------------------------------


def test_http_result_carries_code_status_and_retry_after() -> None:
    assert AttemptResult.http(503, "5") == AttemptResult(code="503", status=503, retry_after="5")


@pytest.mark.parametrize(
    ("result", "result_class"),
    [
        (AttemptResult.http(200), "2xx"),
        (AttemptResult.http(204), "2xx"),
        (AttemptResult.http(400), "4xx"),
        (AttemptResult.http(429), "4xx"),
        (AttemptResult.http(500), "5xx"),
        (AttemptResult.http(503), "5xx"),
        (AttemptResult(code=TIMEOUT), "timeout"),
        (AttemptResult(code=DISPATCH_ERROR), "error"),
        # the metric's label set has no 3xx/1xx: they count as errors
        (AttemptResult.http(302), "error"),
        (AttemptResult.http(101), "error"),
    ],
    ids=lambda value: value.code if isinstance(value, AttemptResult) else value,
)
def test_result_class_is_the_bounded_metric_label(result: AttemptResult, result_class: str) -> None:
    assert result.result_class == result_class


# --- RetryPolicy.from_settings ---------------------------------------------------------------


def test_policy_from_settings_converts_milliseconds_to_seconds() -> None:
    settings = Settings(
        _env_file=None,
        dispatch_retry_count=5,
        dispatch_backoff_base_ms=250,
        dispatch_backoff_cap_ms=8000,
        dispatch_backoff_jitter="equal",
        dispatch_retryable_4xx=frozenset({429}),
    )

    assert RetryPolicy.from_settings(settings) == RetryPolicy(
        retry_count=5, base_s=0.25, cap_s=8.0, jitter="equal", retryable_4xx=frozenset({429})
    )


def test_policy_from_default_settings_is_the_default_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)

    assert RetryPolicy.from_settings(Settings(_env_file=None)) == DEFAULT
    assert RetryPolicy(3, 1.0, 30.0, "none", frozenset({408, 429})) == DEFAULT
