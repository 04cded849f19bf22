"""The rate-limit contract (DESIGN.md §4, §6 INBOX_RATE_PER_SEC / INBOX_BURST) on every backend.

One limiter (`TokenPump`) over each `BucketStore`: in memory on virtual time (exact), and
in Redis on real time (within `slack_s`: a reply reaches us a little after Redis' `TIME`).
Times are when each waiter may use its token, in the order the waiters queued, from the
moment the first one asked. tests/unit/test_rate_limit_contract_memory.py runs the memory
half with no service reachable.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from sender.adapters.redis_rate_backend import RedisBucketStore, limiter_keys
from sender.core.memory_bucket import MemoryBucketStore
from sender.core.ports import TokenReply
from sender.core.ratelimit import BucketStore, Rate
from sender.core.token_pump import RESERVATION_HORIZON_S, RateLookup, Sleep, TokenPump
from tests.integration.ratecheck import max_in_window
from tests.unit.fake_time import FakeTime

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CallLater = Callable[[float, Callable[[], object]], object]


@dataclass
class Backend:
    """One store kind, its clock, and the limiters (one per "pod") made over it."""

    inbox: str
    clock: Callable[[], float]
    sleep: Sleep
    call_later: CallLater
    slack_s: float
    new_store: Callable[[], BucketStore]
    pumps: list[TokenPump] = field(default_factory=list)

    def pump(self, rates: Rate | RateLookup, jitter_allowance_s: float = 0.0) -> TokenPump:
        """A limiter of its own (another pod) on the shared buckets."""
        lookup = (lambda _: rates) if isinstance(rates, Rate) else rates
        made = TokenPump(
            self.new_store(), lookup, jitter_allowance_s=jitter_allowance_s, sleep=self.sleep
        )
        self.pumps.append(made)
        return made


class Uses:
    """When each queued waiter may use its token (on the backend's clock, from `start`)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.start = backend.clock()
        self.times: list[float] = []

    def queue(self, pump: TokenPump, count: int) -> list[asyncio.Future[TokenReply]]:
        """`count` waiters join the queue now."""
        asked = [pump.reserve(self._backend.inbox) for _ in range(count)]
        for waiter in asked:
            waiter.add_done_callback(self._record)
        return asked

    def _record(self, answered: asyncio.Future[TokenReply]) -> None:
        if not answered.cancelled():
            self.times.append(self._backend.clock() - self.start + answered.result().wait_s)


async def answered(*waiters: asyncio.Future[TokenReply]) -> list[TokenReply]:
    async with asyncio.timeout(15):
        return await asyncio.gather(*waiters)


@asynccontextmanager
async def _memory(inbox: str) -> AsyncIterator[Backend]:
    fake = FakeTime()
    store = MemoryBucketStore(fake)
    async with fake.running():
        yield Backend(inbox, fake, fake.sleep, fake.call_later, 1e-6, lambda: store)


@asynccontextmanager
async def _redis(inbox: str) -> AsyncIterator[Backend]:
    clients: list[aioredis.Redis] = []

    def new_store() -> BucketStore:  # a client of its own, as another pod has
        clients.append(aioredis.from_url(REDIS_URL))
        return RedisBucketStore(clients[-1])

    loop = asyncio.get_running_loop()
    try:
        yield Backend(inbox, time.monotonic, asyncio.sleep, loop.call_later, 0.05, new_store)
    finally:
        cleaner = aioredis.from_url(REDIS_URL)
        await cleaner.delete(*limiter_keys(inbox))
        for client in [cleaner, *clients]:
            await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def backend(backend_name: str) -> AsyncIterator[Backend]:
    inbox = f"rl-contract-{uuid.uuid4().hex[:12]}"
    make = _memory if backend_name == "memory" else _redis
    async with make(inbox) as made:
        yield made
        for pump in made.pumps:
            await pump.close()


def at(*times: float, slack_s: float) -> list[object]:
    return [pytest.approx(t, abs=slack_s) for t in times]


async def test_a_new_bucket_is_full_burst_tokens_at_once(backend: Backend) -> None:
    uses = Uses(backend)

    await answered(*uses.queue(backend.pump(Rate(per_sec=10, burst=5)), 6))

    assert uses.times == at(0, 0, 0, 0, 0, 0.1, slack_s=backend.slack_s)


async def test_after_the_burst_tokens_come_one_period_apart(backend: Backend) -> None:
    uses = Uses(backend)

    await answered(*uses.queue(backend.pump(Rate(per_sec=10, burst=2)), 16))

    assert uses.times == at(0, 0, *(0.1 * n for n in range(1, 15)), slack_s=backend.slack_s)


@pytest.mark.parametrize(
    ("allowance_s", "expected"),
    [
        (0.0, (0, 0, 0, 0, 0.125, 0.25)),  # the whole burst
        (0.25, (0, 0, 0.125, 0.25, 0.375, 0.5)),  # two periods short, same steady rate
        (10.0, (0, 0.125, 0.25, 0.375, 0.5, 0.625)),  # at least one token
    ],
)
async def test_the_burst_is_granted_the_jitter_allowance_short(
    backend: Backend, allowance_s: float, expected: tuple[float, ...]
) -> None:
    uses = Uses(backend)
    pump = backend.pump(Rate(per_sec=8, burst=4), jitter_allowance_s=allowance_s)

    await answered(*uses.queue(pump, 6))

    assert uses.times == at(*expected, slack_s=backend.slack_s)


async def test_no_window_gets_more_than_rate_times_t_plus_burst(backend: Backend) -> None:
    rate = Rate(per_sec=40, burst=4)
    pump = backend.pump(rate, jitter_allowance_s=0.1)  # the default allowance
    uses = Uses(backend)

    first = uses.queue(pump, 30)
    await backend.sleep(0.3)
    second = uses.queue(pump, 20)  # joins a queue still being served
    await answered(*first, *second)
    await backend.sleep(0.5)  # idle: the bucket refills
    await answered(*uses.queue(pump, 10))

    assert len(uses.times) == 60
    for window_s in (0.025, 0.1, 0.25, 0.5, 1.0):
        assert max_in_window(uses.times, window_s) <= rate.per_sec * window_s + rate.burst


async def test_a_waiter_that_leaves_the_queue_gets_no_slot_and_delays_no_one(
    backend: Backend,
) -> None:
    pump = backend.pump(Rate(per_sec=2, burst=3))
    uses = Uses(backend)
    asked = uses.queue(pump, 5)
    asked[1].cancel()  # two waiters give up before the limiter has asked the store
    asked[2].cancel()

    await answered(asked[0], asked[3], asked[4])
    await answered(*uses.queue(pump, 1))

    # The burst's three slots go to the three still queued; the next comes one period on.
    assert uses.times == at(0, 0, 0, 0.5, slack_s=backend.slack_s)
    assert asked[1].cancelled()
    assert asked[2].cancelled()


async def test_a_rate_change_shows_within_the_reservation_horizon(backend: Backend) -> None:
    old, new, changed_at = Rate(per_sec=4, burst=1), Rate(per_sec=40, burst=1), 0.4
    rates = {backend.inbox: old}
    pump = backend.pump(rates.__getitem__)
    uses = Uses(backend)

    asked = uses.queue(pump, 40)
    backend.call_later(changed_at, lambda: rates.update({backend.inbox: new}))
    await answered(*asked)

    # Slots reserved before the change (at most the horizon ahead) keep the old spacing.
    shown_by = changed_at + RESERVATION_HORIZON_S + old.period_s
    before = [t for t in uses.times if t < changed_at]
    after = [t for t in uses.times if t >= shown_by]
    assert before == at(0, 0.25, slack_s=backend.slack_s)
    assert len(after) >= 15
    assert after[-1] - after[0] == pytest.approx(
        (len(after) - 1) * new.period_s, abs=backend.slack_s
    )


async def test_two_limiters_on_one_store_share_one_bucket(backend: Backend) -> None:
    rate = Rate(per_sec=20, burst=2)
    pods = [backend.pump(rate), backend.pump(rate)]
    uses = [Uses(backend), Uses(backend)]

    asked = [waiter for pod, use in zip(pods, uses, strict=True) for waiter in use.queue(pod, 15)]
    await answered(*asked)

    together = sorted(uses[0].times + uses[1].times)
    assert [len(use.times) for use in uses] == [15, 15]
    assert together == at(0, 0, *(0.05 * n for n in range(1, 29)), slack_s=backend.slack_s)
    assert max_in_window(together) <= rate.per_sec + rate.burst


class CampaignUses(Uses):
    """`Uses`, labelled by the campaign each waiter queued for."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.campaigns: list[tuple[float, str]] = []

    def queue_for(
        self, pump: TokenPump, campaign_id: str, count: int
    ) -> list[asyncio.Future[TokenReply]]:
        """`count` waiters of `campaign_id` join the queue now."""
        asked = [pump.reserve(self._backend.inbox, campaign_id) for _ in range(count)]
        for waiter in asked:
            waiter.add_done_callback(lambda done, c=campaign_id: self._label(done, c))
        return asked

    def _label(self, answered: asyncio.Future[TokenReply], campaign_id: str) -> None:
        if not answered.cancelled():
            used = self._backend.clock() - self.start + answered.result().wait_s
            self.campaigns.append((used, campaign_id))

    def order(self) -> str:
        """The campaigns' letters in the order their tokens may be used."""
        return "".join(campaign for _, campaign in sorted(self.campaigns))


async def test_slots_go_round_robin_between_campaigns_whatever_their_queue(
    backend: Backend,
) -> None:
    pump = backend.pump(Rate(per_sec=20, burst=1))
    uses = CampaignUses(backend)

    big = uses.queue_for(pump, "A", 12)  # queued first, and more of them
    small = uses.queue_for(pump, "B", 4)
    await answered(*big, *small)

    assert uses.order() == "ABABABAB" + "A" * 8


async def test_a_campaign_that_joins_later_gets_every_other_slot_from_then_on(
    backend: Backend,
) -> None:
    rate = Rate(per_sec=20, burst=1)
    pump = backend.pump(rate)
    uses = CampaignUses(backend)

    big = uses.queue_for(pump, "A", 40)
    await backend.sleep(0.3)
    small = uses.queue_for(pump, "B", 5)
    await answered(*small)
    b_done = max(t for t, campaign in uses.campaigns if campaign == "B")
    await answered(*big)

    # Slots already reserved (the horizon ahead) stay A's; then B gets every other one.
    assert b_done <= 0.3 + RESERVATION_HORIZON_S + 10 * rate.period_s + backend.slack_s
    assert "BB" not in uses.order()
    times = sorted(t for t, _ in uses.campaigns)
    assert times[-1] == pytest.approx(44 * rate.period_s, abs=backend.slack_s)


async def test_three_campaigns_split_a_saturated_inbox_exactly(backend: Backend) -> None:
    pump = backend.pump(Rate(per_sec=50, burst=1))
    uses = CampaignUses(backend)

    asked = [
        w
        for campaign in "ABC"
        for w in uses.queue_for(pump, campaign, 20 + 10 * "ABC".index(campaign))
    ]
    await answered(*asked)

    first_60 = uses.order()[:60]
    assert {campaign: first_60.count(campaign) for campaign in "ABC"} == {"A": 20, "B": 20, "C": 20}


async def test_campaigns_on_different_pods_get_equal_shares_not_each_pods_half(
    backend: Backend,
) -> None:
    rate = Rate(per_sec=100, burst=1)
    one_pod, other_pod = backend.pump(rate), backend.pump(rate)
    uses = CampaignUses(backend)

    asked = uses.queue_for(one_pod, "A", 100)
    asked += uses.queue_for(other_pod, "B", 100) + uses.queue_for(other_pod, "C", 100)
    await answered(*asked)

    # A pod each would give A half of the inbox; fair shares give every campaign a third,
    # within about a quantum (0.1 s of the rate: 10 slots), once A's head start (the
    # horizon it reserved before the others asked: 51 slots) is used.
    middle = uses.order()[60:195]
    assert {c: middle.count(c) for c in "ABC"} == {c: pytest.approx(45, abs=12) for c in "ABC"}
