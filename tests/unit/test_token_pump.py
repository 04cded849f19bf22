"""Spec of the limiter's pump beyond the contract: batching, failing closed, crashes, closing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sender.core.memory_bucket import MemoryBucketStore
from sender.core.ports import TokenReply
from sender.core.ratelimit import BatchAsk, BatchReply, Rate
from sender.core.token_pump import UNAVAILABLE_RETRY_S, TokenPump
from sender.errors import DependencyUnavailable
from tests.unit.fake_time import FakeTime

INBOX = "inbox-42"
FAST = Rate(per_sec=1000, burst=10)


class FlakyStore:
    """A memory store that raises while `down` (a Redis outage), counting calls."""

    def __init__(self, clock: FakeTime) -> None:
        self._store = MemoryBucketStore(clock)
        self._clock = clock
        self.down = False
        self.calls_at: list[float] = []

    async def reserve_batch(self, inbox_id: str, ask: BatchAsk) -> BatchReply:
        self.calls_at.append(self._clock())
        if self.down:
            raise DependencyUnavailable("redis", "connection refused")
        return await self._store.reserve_batch(inbox_id, ask)


class HeldStore:
    """A memory store whose every answer waits until `release` is set (a slow round trip)."""

    def __init__(self, clock: FakeTime) -> None:
        self._store = MemoryBucketStore(clock)
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def reserve_batch(self, inbox_id: str, ask: BatchAsk) -> BatchReply:
        self.asked.set()
        await self.release.wait()
        return await self._store.reserve_batch(inbox_id, ask)


async def _replies(*waiters: asyncio.Future[TokenReply]) -> list[TokenReply]:
    async with asyncio.timeout(5):
        return await asyncio.gather(*waiters)


async def test_one_store_call_answers_every_waiter_whose_slot_fits_the_horizon() -> None:
    fake = FakeTime()
    store = MemoryBucketStore(fake)
    pump = TokenPump(store, lambda _: FAST, jitter_allowance_s=0.0, sleep=fake.sleep)
    async with fake.running():
        replies = await _replies(*(pump.reserve(INBOX) for _ in range(200)))
        await pump.close()

    assert store.calls == pump.calls == 1
    assert [reply.wait_s for reply in replies[9:12]] == pytest.approx([0.0, 0.001, 0.002])


@pytest.mark.parametrize(
    ("rate", "late_limit_s"),
    [
        (Rate(per_sec=10, burst=5), 0.1),  # the jitter allowance the tolerance keeps free
        (Rate(per_sec=10, burst=2), 0.1),  # allowance cut to (burst - 1)·T: one period
        (Rate(per_sec=4, burst=1), 0.25),  # no allowance left: still one period
    ],
)
async def test_each_slot_goes_stale_after_the_jitter_allowance_and_at_least_a_period(
    rate: Rate, late_limit_s: float
) -> None:
    fake = FakeTime()
    pump = TokenPump(MemoryBucketStore(fake), lambda _: rate, jitter_allowance_s=0.1)
    async with fake.running():
        replies = await _replies(pump.reserve(INBOX), pump.reserve(INBOX))
        await pump.close()

    assert [reply.late_limit_s for reply in replies] == pytest.approx([late_limit_s] * 2)


async def test_while_the_store_fails_no_token_is_granted_and_waiters_get_one_once_it_is_back() -> (
    None
):
    fake = FakeTime()
    store = FlakyStore(fake)
    store.down = True
    pump = TokenPump(store, lambda _: FAST, sleep=fake.sleep)
    async with fake.running():
        waiter = pump.reserve(INBOX)
        await fake.sleep(1.0)
        assert not waiter.done()  # fail closed: nothing granted while down
        store.down = False
        reply = await _replies(waiter)
        await pump.close()

    assert reply[0].wait_s == pytest.approx(0.0)
    # the pump kept asking, no faster than every UNAVAILABLE_RETRY_S
    assert len(store.calls_at) == int(1.0 / UNAVAILABLE_RETRY_S) + 1
    assert all(
        b - a == pytest.approx(UNAVAILABLE_RETRY_S)
        for a, b in zip(store.calls_at, store.calls_at[1:], strict=False)
    )


async def test_a_pump_that_crashed_is_started_afresh_by_the_next_reserve() -> None:
    fake = FakeTime()
    broken = {"now": True}
    crashes: list[BaseException] = []

    def rates(inbox_id: str) -> Rate:
        if broken["now"]:
            raise RuntimeError("a bug in the rate lookup")
        return FAST

    def spawn(name: str, job: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def run() -> None:  # no supervisor: record the crash, do not restart
            try:
                await job()
            except Exception as error:
                crashes.append(error)

        return asyncio.create_task(run(), name=name)

    pump = TokenPump(MemoryBucketStore(fake), rates, sleep=fake.sleep, spawn=spawn)
    async with fake.running():
        first = pump.reserve(INBOX)
        await fake.sleep(1.0)
        assert not first.done()  # not a store outage: the pump crashed (for a supervisor)
        broken["now"] = False
        replies = await _replies(first, pump.reserve(INBOX))
        await pump.close()

    assert [type(error) for error in crashes] == [RuntimeError]
    # the first waiter is still queued and served first, then the new one a period on
    assert [reply.wait_s for reply in replies] == pytest.approx([0.0, 0.001])


async def test_a_slot_reserved_for_a_waiter_that_left_meanwhile_goes_unused() -> None:
    fake = FakeTime()
    store = HeldStore(fake)
    slow = Rate(per_sec=2, burst=1)
    pump = TokenPump(store, lambda _: slow, jitter_allowance_s=0.0, sleep=fake.sleep)
    async with fake.running():
        start = fake()
        leaving, staying = pump.reserve(INBOX), pump.reserve(INBOX)
        await store.asked.wait()
        leaving.cancel()  # gives up while its slot and the next are being reserved
        store.release.set()
        first = await _replies(staying)
        later = pump.reserve(INBOX)
        second = await _replies(later)
        used_later_at = fake() - start + second[0].wait_s
        await pump.close()

    # The one still queued gets the first slot at once; the second (0.5 s) had no taker
    # left and is not handed on, so the next waiter's slot is the third (1.0 s).
    assert [reply.wait_s for reply in first] == [0.0]
    assert used_later_at == pytest.approx(1.0)


async def test_the_pump_stops_once_no_waiter_is_left_and_a_new_waiter_starts_another() -> None:
    fake = FakeTime()
    store = MemoryBucketStore(fake)
    pump = TokenPump(store, lambda _: FAST, sleep=fake.sleep)
    async with fake.running():
        await _replies(pump.reserve(INBOX))
        await fake.sleep(5.0)  # idle: no calls while nobody waits
        await _replies(pump.reserve(INBOX))
        await pump.close()

    assert store.calls == 2


async def test_close_stops_the_pumps_and_leaves_queued_waiters_unanswered() -> None:
    fake = FakeTime()
    store = FlakyStore(fake)
    store.down = True
    pump = TokenPump(store, lambda _: FAST, sleep=fake.sleep)
    async with fake.running():
        waiter = pump.reserve(INBOX)
        await fake.sleep(0.5)
        await pump.close()
        calls = len(store.calls_at)
        await fake.sleep(5.0)

    assert not waiter.done()
    assert len(store.calls_at) == calls


async def test_a_campaign_whose_waiters_all_left_stops_holding_other_pods_back_at_once() -> None:
    fake = FakeTime()
    store = MemoryBucketStore(fake)  # shared by two "pods"
    rate = Rate(per_sec=100, burst=1)
    pods = [
        TokenPump(store, lambda _: rate, jitter_allowance_s=0.0, sleep=fake.sleep) for _ in "ab"
    ]
    b_uses: list[float] = []

    def record(done: asyncio.Future[TokenReply]) -> None:
        if not done.cancelled():
            b_uses.append(fake() + done.result().wait_s)

    async with fake.running():
        paused = [pods[0].reserve(INBOX, "A") for _ in range(300)]
        for waiter in [pods[1].reserve(INBOX, "B") for _ in range(300)]:
            waiter.add_done_callback(record)
        await fake.sleep(1.0)
        for waiter in paused:  # campaign A paused: its waiters leave the queue
            waiter.cancel()
        left_at = fake()
        await fake.sleep(1.5)
        for pod in pods:
            await pod.close()

    # B has the whole rate from A's leaving (plus the horizon A had reserved), well
    # before A's standing would lapse (fair_share.ACTIVE_S).
    soon = [t for t in b_uses if left_at + 0.6 <= t < left_at + 1.0]
    assert len(soon) == pytest.approx(0.4 * rate.per_sec, abs=2)


async def test_waiting_counts_a_campaigns_waiters_still_queued_at_one_inbox() -> None:
    fake = FakeTime()
    store = HeldStore(fake)  # answers nothing until released: everyone stays queued
    pump = TokenPump(store, lambda _: FAST, sleep=fake.sleep)
    async with fake.running():
        a1, _a2, _b = pump.reserve(INBOX, "a"), pump.reserve(INBOX, "a"), pump.reserve(INBOX, "b")
        await store.asked.wait()
        a1.cancel()  # left the queue
        counts = [pump.waiting(INBOX, "a"), pump.waiting(INBOX, "b"), pump.waiting("other", "a")]
        await pump.close()

    assert counts == [1, 1, 0]
