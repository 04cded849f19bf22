"""Spec of deferred retries (DESIGN.md §4, §6): the schedule setting, the pure decision,
and the contact loop handing a used-up round to the ledger instead of failing it."""

from __future__ import annotations

import asyncio
import random

import pytest
from pydantic import ValidationError

from sender.core.contact_sender import ContactSender
from sender.core.events import ContactFinished, EventBus, TerminalFailure
from sender.core.policy import (
    FIRST_ROUND,
    AttemptResult,
    Defer,
    EarlierRounds,
    Fail,
    Retry,
    RetryPolicy,
    decide,
)
from sender.core.ports import ContactOutcome
from sender.runtime.metrics import Metrics
from sender.settings import Settings, describe_error, parse_schedule
from tests.unit.test_retry_loop import (
    E503,
    NOW,
    OK,
    REQUEST,
    FakeGate,
    FakeLimiter,
    ScriptedDispatcher,
    TickingClock,
)

DEFERRING = RetryPolicy(retry_count=3, deferred_schedule=(2.0, 4.0))


def test_schedule_parses_seconds_minutes_and_hours() -> None:
    assert parse_schedule("1m,5m,30m,2h,12h") == (60.0, 300.0, 1800.0, 7200.0, 43200.0)
    assert parse_schedule(" 2s, 4s ") == (2.0, 4.0)
    assert parse_schedule("0.5s") == (0.5,)


def test_empty_schedule_means_no_deferred_rounds() -> None:
    assert parse_schedule("") == ()
    assert Settings(_env_file=None).deferred_schedule_s == ()
    assert RetryPolicy.from_settings(Settings(_env_file=None)).deferred_schedule == ()


@pytest.mark.parametrize("bad", ["5", "5d", "0s", "-1m", "1m,,2m", "nan", "infs", "721h", "1e3s"])
def test_a_bad_schedule_names_the_variable(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("DISPATCH_DEFERRED_SCHEDULE", bad)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert describe_error(caught.value).startswith("invalid setting DISPATCH_DEFERRED_SCHEDULE:")


def test_more_than_fifty_rounds_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 50"):
        parse_schedule(",".join(["1s"] * 51))


@pytest.mark.parametrize(
    ("name", "value"), [("AUTO_PAUSE_WINDOW", "-1"), ("AUTO_PAUSE_FAILURE_RATIO", "0")]
)
def test_bad_auto_pause_settings_exit_naming_them(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert describe_error(caught.value).startswith(f"invalid setting {name}:")


def test_auto_pause_defaults_are_the_contract() -> None:
    settings = Settings(_env_file=None)
    assert (settings.auto_pause_window, settings.auto_pause_failure_ratio) == (200, 0.5)


def _decide(codes: list[str], earlier: EarlierRounds = FIRST_ROUND) -> object:
    return decide(codes, E503, DEFERRING, random.Random(0), NOW, earlier)


def test_a_used_up_first_round_defers_by_the_first_entry() -> None:
    assert _decide(["503"] * 4) == Defer(2.0, round_number=2)


def test_a_used_up_second_round_defers_by_the_second_entry() -> None:
    assert _decide(["503"] * 4, EarlierRounds(1, ("503",) * 4)) == Defer(4.0, round_number=3)


def test_within_a_round_retries_are_as_before() -> None:
    assert _decide(["503"]) == Retry(1.0, retry_number=1)
    assert _decide(["503"] * 3, EarlierRounds(1, ("503",) * 4)) == Retry(4.0, retry_number=3)


def test_after_the_last_entry_the_reason_lists_every_round_in_order() -> None:
    earlier = EarlierRounds(2, ("503", "504", "503", "503", "TIMEOUT", "503", "503", "503"))
    decision = _decide(["503", "DISPATCH_ERROR", "503", "503"], earlier)
    assert decision == Fail(
        reason='dispatch_exhausted_retries: ["503","504","503","503","TIMEOUT","503","503",'
        '"503","503","DISPATCH_ERROR","503","503"]',
        kind="exhausted_retries",
    )


def test_a_4xx_in_a_later_round_fails_at_once() -> None:
    decision = decide(
        ["400"], AttemptResult.http(400), DEFERRING, random.Random(0), NOW, EarlierRounds(1)
    )
    assert decision == Fail(reason="http_4xx: 400", kind="http_4xx")


class FakeHistory:
    """The ledger's earlier rounds of the one contact, counting reads."""

    def __init__(self, earlier: EarlierRounds) -> None:
        self.earlier = earlier
        self.reads = 0

    async def earlier_rounds(self, campaign_id: str, contact_id: str) -> EarlierRounds:
        self.reads += 1
        return self.earlier


async def _send(
    dispatcher: ScriptedDispatcher, history: FakeHistory, events: list[object]
) -> ContactOutcome:
    sender = ContactSender(
        dispatcher=dispatcher,
        limiter=FakeLimiter(),
        gate=FakeGate(),
        policy=DEFERRING,
        events=EventBus([events.append]),
        max_token_wait_s=30.0,
        http_slots=asyncio.Semaphore(1),
        monotonic=TickingClock(0.0),
        rng=random.Random(0),
        wall_clock=lambda: NOW,
        history=history,
    )
    return await sender.send(REQUEST)


async def test_a_used_up_round_goes_back_pending_deferred_with_its_codes() -> None:
    history, events = FakeHistory(FIRST_ROUND), []
    outcome = await _send(ScriptedDispatcher(E503, E503, E503, E503), history, events)
    assert outcome == ContactOutcome.deferred(
        "spring-sale", "c-0001", codes=["503"] * 4, delay_s=2.0, last_status_code=503
    )
    assert outcome.status == "pending"
    assert outcome.attempts == 4
    assert history.reads == 1  # only at the round's end
    assert not [e for e in events if isinstance(e, TerminalFailure)]


async def test_the_last_round_fails_with_every_code() -> None:
    history, events = FakeHistory(EarlierRounds(2, ("503",) * 8)), []
    outcome = await _send(ScriptedDispatcher(E503, E503, E503, E503), history, events)
    assert outcome.status == "failed"
    assert outcome.attempts == 4
    assert outcome.reason == "dispatch_exhausted_retries: " + str(["503"] * 12).replace(
        "'", '"'
    ).replace(" ", "")


async def test_a_sent_contact_never_reads_its_history() -> None:
    history = FakeHistory(FIRST_ROUND)
    outcome = await _send(ScriptedDispatcher(E503, OK), history, [])
    assert outcome.status == "sent"
    assert history.reads == 0


def test_a_schedule_without_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="history"):
        ContactSender(
            dispatcher=ScriptedDispatcher(),
            limiter=FakeLimiter(),
            gate=FakeGate(),
            policy=DEFERRING,
            events=EventBus(),
            max_token_wait_s=30.0,
            http_slots=asyncio.Semaphore(1),
            monotonic=TickingClock(0.0),
        )


def test_a_deferral_counts_once_as_outcome_deferred() -> None:
    metrics = Metrics("test")
    deferred = ContactOutcome.deferred("k", "c", codes=["503"], delay_s=2.0, last_status_code=503)
    metrics.observe(ContactFinished(deferred))
    assert metrics.value("sender_contacts_total", outcome="deferred") == 1
    assert metrics.value("sender_contacts_total", outcome="aborted") == 0
