"""Spec of auto-pause (DESIGN.md §11): the pure verdict, and the watch over fake ports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sender.core.auto_pause import AutoPausePolicy, AutoPauseWatch, OutcomeWindow, pause_reason
from sender.core.events import EventBus
from sender.core.ports import CampaignStatus, ContactOutcome
from sender.errors import DependencyUnavailable
from sender.runtime.metrics import Metrics

POLICY = AutoPausePolicy(window=200, failure_ratio=0.5)
ANNOUNCED = asyncio.Event()


def test_mostly_failed_window_pauses_with_the_commonest_reason() -> None:
    reason = pause_reason(OutcomeWindow(200, 187, "http_4xx: 400"), POLICY)
    assert reason == "auto-paused: 187 of the last 200 contacts failed (http_4xx: 400)"


def test_exactly_the_ratio_pauses_and_one_less_does_not() -> None:
    assert pause_reason(OutcomeWindow(200, 100, "http_4xx: 400"), POLICY) is not None
    assert pause_reason(OutcomeWindow(200, 99, "http_4xx: 400"), POLICY) is None


def test_a_window_not_yet_full_never_pauses() -> None:
    assert pause_reason(OutcomeWindow(199, 199, "http_4xx: 400"), POLICY) is None


def test_window_zero_disables_it() -> None:
    off = AutoPausePolicy(window=0)
    assert not off.enabled
    assert pause_reason(OutcomeWindow(0, 0, None), off) is None


@dataclass
class FakeJudge:
    window: OutcomeWindow
    running: bool = True
    reads: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    down: bool = False

    async def recent_outcomes(self, campaign_id: str, window: int) -> OutcomeWindow:
        if self.down:
            raise DependencyUnavailable("postgres", "gone")
        self.reads.append(campaign_id)
        return self.window

    async def pause_itself(self, campaign_id: str, reason: str) -> bool:
        was, self.running = self.running, False
        if was:
            self.reasons.append(reason)
        return was


def _failed(campaign_id: str) -> ContactOutcome:
    return ContactOutcome.failed(
        campaign_id, "c", attempts=1, reason="http_4xx: 400", last_status_code=400
    )


def _rig(
    judge: FakeJudge, nap: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> tuple[AutoPauseWatch, list[tuple[str, str]], Metrics]:
    announced: list[tuple[str, str]] = []
    metrics = Metrics("test")

    async def announce(campaign_id: str, status: CampaignStatus) -> bool:
        announced.append((campaign_id, status))
        ANNOUNCED.set()
        return True

    watch = AutoPauseWatch(judge, announce, EventBus([metrics.observe]), POLICY, sleep=nap)
    return watch, announced, metrics


async def test_a_paused_campaign_is_announced_to_every_pod_and_counted() -> None:
    judge = FakeJudge(OutcomeWindow(200, 187, "http_4xx: 400"))
    watch, announced, metrics = _rig(judge)
    assert await watch.judge("k") is not None
    assert announced == [("k", "paused")]
    assert metrics.value("sender_campaign_auto_pauses_total") == 1
    assert await watch.judge("k") is None  # already paused: the other pod's judgement
    assert metrics.value("sender_campaign_auto_pauses_total") == 1


async def test_a_healthy_window_changes_nothing() -> None:
    judge = FakeJudge(OutcomeWindow(200, 3, "http_4xx: 400"))
    watch, announced, _ = _rig(judge)
    assert await watch.judge("k") is None
    assert announced == []
    assert judge.running


def test_only_batches_with_failures_make_a_campaign_a_suspect() -> None:
    watch, _, _ = _rig(FakeJudge(OutcomeWindow(0, 0, None)))
    sent = ContactOutcome.sent("a", "c", attempts=1, last_status_code=200)
    watch.notice([sent])
    assert not watch._woken.is_set()
    watch.notice([sent, _failed("b")])
    assert watch._suspects == {"b"}


async def test_the_watch_judges_each_suspect_once_and_keeps_them_while_the_ledger_is_down() -> None:
    judge = FakeJudge(OutcomeWindow(200, 200, "http_4xx: 400"), down=True)
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        judge.down = False

    watch, announced, _ = _rig(judge, nap)
    watch.notice([_failed("k"), _failed("k")])
    task = asyncio.ensure_future(watch.run_forever())
    ANNOUNCED.clear()
    await asyncio.wait_for(ANNOUNCED.wait(), 5)
    task.cancel()
    assert judge.reads == ["k"]
    assert naps == [1.0]
    assert announced == [("k", "paused")]
