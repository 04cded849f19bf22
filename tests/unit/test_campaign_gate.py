"""Spec of the campaign gate (DESIGN.md §4): status lookups and sleeps cut short by a halt.

The status source is a fake whose answers the test controls; the TTL runs on a manual
clock. Sleeps that must be cut short are asked for far longer than any test runs, and
each test is bounded, so a sleep that is not cut short fails instead of passing late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from sender.core.campaign_gate import CampaignGate
from sender.core.ports import CampaignStatus, StopCause
from sender.errors import DependencyUnavailable

CAMPAIGN = "spring-sale"
TTL_S = 2.0
LONG_S = 3600.0  # a sleep no test may wait out
T = TypeVar("T")


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeStatuses:
    """Answers `status` (or raises `failure`); with `hold` set, each read waits for `go`."""

    def __init__(self, status: CampaignStatus | None = "running") -> None:
        self.status: CampaignStatus | None = status
        self.failure: Exception | None = None
        self.reads = 0
        self.hold = False
        self.go = asyncio.Event()
        self.reading = asyncio.Event()

    async def __call__(self, campaign_id: str) -> CampaignStatus | None:
        assert campaign_id == CAMPAIGN
        self.reads += 1
        self.reading.set()
        if self.hold:
            await self.go.wait()
        if self.failure is not None:
            raise self.failure
        return self.status


class Rig:
    def __init__(self, *, poll_s: float = LONG_S, ttl_s: float = TTL_S) -> None:
        self.clock = ManualClock()
        self.statuses = FakeStatuses()
        self.shutdown = asyncio.Event()
        self.gate = CampaignGate(
            self.statuses, ttl_s=ttl_s, poll_s=poll_s, monotonic=self.clock, shutdown=self.shutdown
        )

    async def primed(self) -> None:
        """One read, so the status is cached and a sleep parks at once."""
        assert await self.gate.blocker(CAMPAIGN) is None


async def bounded(call: Awaitable[T]) -> T:
    async with asyncio.timeout(5):
        return await call


async def parked() -> None:
    """One loop turn: a sleep started just now reaches its wait."""
    await asyncio.sleep(0)


# --- status lookups --------------------------------------------------------------------------


async def test_a_running_campaign_may_send() -> None:
    rig = Rig()

    assert await rig.gate.blocker(CAMPAIGN) is None


@pytest.mark.parametrize("status", ["paused", "stopped", "completed"])
async def test_a_halted_campaign_is_blocked_with_its_status(status: CampaignStatus) -> None:
    rig = Rig()
    rig.statuses.status = status

    assert await rig.gate.blocker(CAMPAIGN) == status


async def test_an_unknown_campaign_may_send() -> None:
    rig = Rig()
    rig.statuses.status = None

    assert await rig.gate.blocker(CAMPAIGN) is None


async def test_at_shutdown_every_campaign_is_blocked_without_a_read() -> None:
    rig = Rig()
    rig.shutdown.set()

    assert await rig.gate.blocker(CAMPAIGN) == "shutdown"
    assert rig.statuses.reads == 0


async def test_a_status_is_read_once_per_ttl() -> None:
    rig = Rig()

    for _ in range(5):
        await rig.gate.blocker(CAMPAIGN)
    rig.clock.advance(TTL_S - 0.01)
    await rig.gate.blocker(CAMPAIGN)
    assert rig.statuses.reads == 1

    rig.statuses.status = "paused"
    rig.clock.advance(0.01)
    assert await rig.gate.blocker(CAMPAIGN) == "paused"
    assert rig.statuses.reads == 2


async def test_a_notification_updates_the_cache_without_a_read() -> None:
    rig = Rig()
    await rig.primed()

    rig.gate.status_changed(CAMPAIGN, "paused")

    assert await rig.gate.blocker(CAMPAIGN) == "paused"
    assert rig.statuses.reads == 1


async def test_a_notification_wins_over_a_read_that_was_racing_it() -> None:
    rig = Rig()
    rig.statuses.hold = True
    looking = asyncio.create_task(rig.gate.blocker(CAMPAIGN))
    await rig.statuses.reading.wait()

    rig.gate.status_changed(CAMPAIGN, "paused")  # newer than what the read will return
    rig.statuses.go.set()

    assert await bounded(looking) == "paused"
    assert await rig.gate.blocker(CAMPAIGN) == "paused"  # the stale read was not cached
    assert rig.statuses.reads == 1


async def test_concurrent_lookups_share_one_read() -> None:
    rig = Rig()
    rig.statuses.hold = True
    lookups = [asyncio.create_task(rig.gate.blocker(CAMPAIGN)) for _ in range(10)]
    await rig.statuses.reading.wait()

    rig.statuses.go.set()

    assert await bounded(asyncio.gather(*lookups)) == [None] * 10
    assert rig.statuses.reads == 1


async def test_a_lookup_given_up_does_not_cancel_the_shared_read() -> None:
    rig = Rig()
    rig.statuses.hold = True
    impatient = asyncio.create_task(rig.gate.blocker(CAMPAIGN))
    patient = asyncio.create_task(rig.gate.blocker(CAMPAIGN))
    await rig.statuses.reading.wait()

    impatient.cancel()
    rig.statuses.status = "stopped"
    rig.statuses.go.set()

    assert await bounded(patient) == "stopped"
    assert rig.statuses.reads == 1


async def test_with_ledger_and_redis_down_the_last_known_status_holds() -> None:
    rig = Rig()
    rig.statuses.status = "paused"
    assert await rig.gate.blocker(CAMPAIGN) == "paused"

    rig.statuses.failure = DependencyUnavailable("redis", "connection refused")
    rig.clock.advance(TTL_S * 10)

    assert await rig.gate.blocker(CAMPAIGN) == "paused"
    assert rig.statuses.reads == 2


async def test_with_nothing_known_and_the_stores_down_the_campaign_may_send() -> None:
    rig = Rig()  # outcome writes stop sends while the ledger is down, not the gate
    rig.statuses.failure = DependencyUnavailable("postgres", "connection refused")

    assert await rig.gate.blocker(CAMPAIGN) is None


async def test_once_the_stores_are_back_the_status_is_read_again() -> None:
    rig = Rig()
    await rig.primed()
    rig.statuses.failure = DependencyUnavailable("redis", "connection refused")
    rig.clock.advance(TTL_S)
    assert await rig.gate.blocker(CAMPAIGN) is None

    rig.statuses.failure = None
    rig.statuses.status = "stopped"

    assert await rig.gate.blocker(CAMPAIGN) == "stopped"


# --- sleeps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["paused", "stopped", "completed"])
async def test_a_sleep_is_cut_short_by_a_halt_notification(status: CampaignStatus) -> None:
    rig = Rig()
    await rig.primed()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S))
    await parked()

    rig.gate.status_changed(CAMPAIGN, status)

    assert await bounded(sleeping) == status


async def test_a_resume_notification_does_not_end_a_sleep() -> None:
    rig = Rig()
    await rig.primed()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S))
    await parked()

    rig.gate.status_changed(CAMPAIGN, "running")
    await parked()

    assert not sleeping.done()
    rig.gate.status_changed(CAMPAIGN, "stopped")
    assert await bounded(sleeping) == "stopped"


async def test_a_halt_of_another_campaign_does_not_end_a_sleep() -> None:
    rig = Rig()
    await rig.primed()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S))
    await parked()

    rig.gate.status_changed("autumn-sale", "stopped")
    await parked()

    assert not sleeping.done()
    sleeping.cancel()


async def test_a_sleep_is_cut_short_by_shutdown() -> None:
    rig = Rig()
    await rig.primed()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S))
    await parked()

    rig.shutdown.set()
    rig.gate.wake_all()

    assert await bounded(sleeping) == "shutdown"


async def test_a_sleep_on_a_halted_campaign_returns_at_once() -> None:
    rig = Rig()
    rig.statuses.status = "paused"

    assert await bounded(rig.gate.sleep(CAMPAIGN, LONG_S)) == "paused"


async def test_without_a_notification_a_halt_is_seen_by_the_next_poll_slice() -> None:
    rig = Rig(poll_s=0.001)
    await rig.primed()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S))
    await parked()
    assert not sleeping.done()

    rig.statuses.status = "stopped"  # the notification was lost
    rig.clock.advance(TTL_S)  # the cached status runs out

    assert await bounded(sleeping) == "stopped"
    assert rig.statuses.reads == 2  # the priming read, then one by a slice


async def test_a_sleep_lasts_its_seconds_on_the_injected_clock() -> None:
    rig = Rig(poll_s=0.001)
    await rig.primed()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, 10.0))
    await parked()
    assert not sleeping.done()

    rig.clock.advance(10.0)  # the next slice sees the time is up

    assert await bounded(sleeping) is None


async def test_a_sleep_watching_a_call_ends_when_the_call_answers() -> None:
    rig = Rig()
    await rig.primed()
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S, until=answer))
    await parked()

    answer.set_result("token")

    assert await bounded(sleeping) is None


async def test_a_halt_while_watching_a_call_ends_the_sleep_with_the_cause() -> None:
    rig = Rig()
    await rig.primed()
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    sleeping = asyncio.create_task(rig.gate.sleep(CAMPAIGN, LONG_S, until=answer))
    await parked()

    rig.gate.status_changed(CAMPAIGN, "paused")
    cause: StopCause | None = await bounded(sleeping)

    assert cause == "paused"
    assert not answer.done()  # the watched call is the caller's to cancel
