"""Spec of the fair split of one inbox between campaigns across pods (DESIGN.md §12).

`grant_fair_batch` is the math the Lua script runs; these drive it directly on virtual
time, with "pods" that each ask for their own campaigns and ask again when told to.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sender.core.fair_share import (
    ACTIVE_S,
    FAIR_RETRY_S,
    FORGET_S,
    Standing,
    grant_fair_batch,
    quantum_slots,
    split_slots,
)
from sender.core.ratelimit import BatchAsk, Rate, tolerance_s

NOW = 1_000_000_000
QUANTUM = 10
ACTIVE = round(ACTIVE_S * 1e6)

# How many waiters a pod's campaign has when it asks (saturating unless said otherwise).
Demand = Callable[[float], int]


def always(count: int) -> Demand:
    return lambda _now: count


@dataclass
class Inbox:
    """One inbox's shared state (what Redis keeps) and every slot's use time per campaign."""

    rate: Rate
    tat_us: int | None = None
    standings: dict[str, Standing] = field(default_factory=dict)
    uses: dict[str, list[float]] = field(default_factory=dict)

    def reserve(self, now_s: float, wants: tuple[tuple[str, int], ...]) -> float:
        """One pod's reservation at `now_s`; returns when that pod asks again."""
        tolerance = tolerance_s(self.rate, 0.0)
        ask = BatchAsk(self.rate.period_s, tolerance, 0.5, quantum_slots(self.rate), wants)
        now_us = round(now_s * 1e6)
        got = grant_fair_batch(self.tat_us, self.standings, now_us, ask)
        self.tat_us = got.new_tat_us if got.new_tat_us is not None else self.tat_us
        self.standings = got.standings
        slot = 0
        for (campaign_id, _), count in zip(wants, got.granted, strict=True):
            for _ in range(count):
                slot += 1
                use_us = now_us + got.first_minus_now_us + slot * round(self.rate.period_s * 1e6)
                self.uses.setdefault(campaign_id, []).append(
                    max(now_s, (use_us - tolerance * 1e6) / 1e6)
                )
        short = sum(got.granted) < sum(want for _, want in wants)
        return now_s + (max(got.retry_us / 1e6, 0.001) if short else 0.1)

    def share(self, campaign_id: str, start_s: float, end_s: float) -> float:
        """Slots per second `campaign_id` used in [start, end)."""
        times = sorted(self.uses.get(campaign_id, []))
        used = bisect.bisect_left(times, end_s) - bisect.bisect_left(times, start_s)
        return used / (end_s - start_s)


def run_pods(inbox: Inbox, pods: list[dict[str, Demand]], seconds: float) -> None:
    """Each pod asks for its campaigns' demand, again whenever its last answer says."""
    calls = [(0.001 * i, i) for i in range(len(pods))]
    while calls:
        now_s, pod = heapq.heappop(calls)
        if now_s >= seconds:
            continue
        wants = tuple((cid, demand(now_s)) for cid, demand in pods[pod].items())
        wants = tuple((cid, n) for cid, n in wants if n > 0)
        next_s = inbox.reserve(now_s, wants) if wants else now_s + 0.1
        heapq.heappush(calls, (next_s, pod))


# --- split_slots ----------------------------------------------------------------------------


def test_slots_go_to_the_lowest_tag_first_then_alternate() -> None:
    standings = {"A": Standing(5, NOW, True), "B": Standing(2, NOW, True)}

    split = split_slots(standings, (("A", 10), ("B", 10)), 8, NOW, QUANTUM, ACTIVE)

    assert split.granted == (3, 5)  # B catches up 3, then they alternate from A
    assert (split.standings["A"].tag, split.standings["B"].tag) == (8, 7)


def test_no_campaign_gets_a_quantum_ahead_of_one_another_pod_is_waiting_for() -> None:
    standings = {"other-pod": Standing(100, NOW, True), "A": Standing(100, NOW, True)}

    split = split_slots(standings, (("A", 50),), 50, NOW, QUANTUM, ACTIVE)

    assert split.granted == (QUANTUM,)
    assert split.held_back
    assert split.standings["A"] == Standing(100 + QUANTUM, NOW, True)


def test_a_campaign_whose_pod_stopped_asking_holds_no_one_back_after_the_active_window() -> None:
    gone = {"paused": Standing(0, NOW - ACTIVE - 1, True), "A": Standing(500, NOW, True)}

    split = split_slots(gone, (("A", 50),), 50, NOW, QUANTUM, ACTIVE)

    assert split.granted == (50,)
    assert not split.held_back


def test_a_campaign_that_wants_less_than_its_share_holds_no_one_back() -> None:
    satisfied = {"small": Standing(0, NOW, False), "A": Standing(500, NOW, True)}

    split = split_slots(satisfied, (("A", 50),), 50, NOW, QUANTUM, ACTIVE)

    assert split.granted == (50,)


def test_a_new_campaign_joins_at_the_lowest_waiting_tag_not_at_zero() -> None:
    standings = {"A": Standing(10_000, NOW, True)}

    split = split_slots(standings, (("A", 20), ("new", 20)), 20, NOW, QUANTUM, ACTIVE)

    assert split.granted == (10, 10)


def test_a_campaign_back_from_idle_banks_no_credit() -> None:
    standings = {"A": Standing(10_000, NOW, True), "idle": Standing(3, NOW - 30_000_000, False)}

    split = split_slots(standings, (("A", 20), ("idle", 20)), 20, NOW, QUANTUM, ACTIVE)

    assert split.granted == (10, 10)


def test_one_that_ran_ahead_alone_is_pulled_back_to_a_quantum_ahead() -> None:
    standings = {"ran-ahead": Standing(90_000, NOW, False), "B": Standing(10, NOW, True)}

    split = split_slots(standings, (("ran-ahead", 20),), 20, NOW, QUANTUM, ACTIVE)

    assert split.granted == (0,)  # already a quantum ahead of B, which another pod waits for
    assert split.standings["ran-ahead"].tag == 10 + QUANTUM


def test_standings_not_renewed_are_forgotten() -> None:
    inbox = Inbox(Rate(per_sec=100, burst=1))
    inbox.reserve(0.0, (("old", 5),))
    inbox.reserve(FORGET_S + 1, (("new", 5),))

    assert set(inbox.standings) == {"new"}


def test_held_back_by_the_quantum_alone_asks_again_soon() -> None:
    standings = {"other-pod": Standing(0, NOW, True)}
    ask = BatchAsk(0.01, 0.01, 0.5, QUANTUM, (("A", 30),))

    got = grant_fair_batch(None, standings, NOW, ask)

    assert got.granted == (QUANTUM,)
    assert got.retry_us == round(FAIR_RETRY_S * 1e6)


def test_the_quantum_is_a_tenth_of_a_second_of_the_rate_and_never_below_the_burst() -> None:
    assert quantum_slots(Rate(per_sec=150, burst=10)) == 15
    assert quantum_slots(Rate(per_sec=4, burst=20)) == 20


# --- across pods ----------------------------------------------------------------------------

RATE = Rate(per_sec=150, burst=10)


@pytest.mark.parametrize(
    "pods",
    [
        [{"A": always(500)}, {"B": always(500), "C": always(500)}],
        [{"A": always(500), "B": always(500)}, {"A": always(500), "C": always(500)}],
        [{"A": always(500)}, {"B": always(500)}, {"C": always(40)}, {"A": always(5)}],
    ],
    ids=["one-and-two", "shared-campaign", "four-pods"],
)
def test_three_campaigns_on_any_pods_get_a_third_each_over_any_ten_seconds(
    pods: list[dict[str, Demand]],
) -> None:
    inbox = Inbox(RATE)
    run_pods(inbox, pods, seconds=40)

    for start in (2.0, 10.0, 25.0):
        shares = {c: inbox.share(c, start, start + 10) for c in "ABC"}
        assert shares == pytest.approx(dict.fromkeys("ABC", 50.0), rel=0.05), (start, shares)


def test_a_campaign_that_wants_less_leaves_its_rest_to_the_others() -> None:
    inbox = Inbox(RATE)
    trickle = always(2)  # 2 waiters at a time: at most 20/s, far under its third
    run_pods(inbox, [{"small": trickle}, {"A": always(500)}, {"B": always(500)}], seconds=20)

    assert 8 <= inbox.share("small", 5, 15) <= 20
    total = sum(inbox.share(c, 5, 15) for c in ("small", "A", "B"))
    assert total == pytest.approx(RATE.per_sec, rel=0.02)
    assert inbox.share("A", 5, 15) == pytest.approx(inbox.share("B", 5, 15), rel=0.05)


def test_across_pods_no_window_gets_more_than_rate_times_t_plus_burst() -> None:
    inbox = Inbox(RATE)
    run_pods(inbox, [{"A": always(500)}, {"B": always(500), "C": always(7)}], seconds=20)

    used = sorted(t for times in inbox.uses.values() for t in times)
    for window_s in (0.0, 0.1, 1.0, 10.0):
        busiest = max(
            bisect.bisect_right(used, start + window_s) - i for i, start in enumerate(used)
        )
        assert busiest <= RATE.per_sec * window_s + RATE.burst + 1e-9


def test_a_campaign_that_stops_waiting_stops_counting_within_the_active_window() -> None:
    inbox = Inbox(RATE)
    stop_at = 5.0
    pausing: Demand = lambda now: 500 if now < stop_at else 0  # noqa: E731
    run_pods(inbox, [{"paused": pausing}, {"A": always(500)}], seconds=12)

    after = stop_at + ACTIVE_S
    assert inbox.share("A", after, 12) == pytest.approx(RATE.per_sec, rel=0.02)
    assert Counter(t >= stop_at + 0.6 for t in inbox.uses["paused"])[True] == 0
