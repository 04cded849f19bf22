"""The background-task supervisor: restart with backoff, give up loudly, never die silently."""

from __future__ import annotations

import asyncio

from sender.runtime.supervisor import RestartPolicy, Supervisor, restart_delay

POLICY = RestartPolicy(base_s=0.5, cap_s=4.0, max_restarts=3, window_s=60.0)


class FakeTime:
    """A clock that moves only when the supervisor sleeps; records each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_restart_delay_doubles_from_the_base_up_to_the_cap() -> None:
    delays = [restart_delay([0.0] * n, 1.0, POLICY) for n in (1, 2, 3)]
    assert delays == [0.5, 1.0, 2.0]
    assert restart_delay([0.0] * 3, 1.0, RestartPolicy(base_s=3, cap_s=4, max_restarts=9)) == 4


def test_more_crashes_than_allowed_within_the_window_means_give_up() -> None:
    assert restart_delay([0.0] * 4, 1.0, POLICY) is None


def test_crashes_older_than_the_window_are_forgotten() -> None:
    assert restart_delay([0.0, 0.0, 0.0, 100.0], 100.0, POLICY) == 0.5


async def test_a_crashing_job_is_restarted_after_backoff_and_then_runs_on() -> None:
    clock = FakeTime()
    supervisor = Supervisor(POLICY, sleep=clock.sleep, monotonic=clock.monotonic)
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise ValueError("cannot convert float NaN to integer")

    await supervisor.spawn("rate-pump", job)

    assert runs == [0, 1, 2]
    assert clock.sleeps == [0.5, 1.0]
    assert supervisor.restarts == 2
    assert supervisor.healthy


async def test_a_job_that_keeps_crashing_sets_failed_and_names_itself() -> None:
    clock = FakeTime()
    supervisor = Supervisor(POLICY, sleep=clock.sleep, monotonic=clock.monotonic)
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    await supervisor.spawn("lease-keeper", job)

    assert runs == POLICY.max_restarts + 1
    assert supervisor.failed.is_set()
    assert not supervisor.healthy
    assert supervisor.gave_up_on == "lease-keeper"


async def test_a_job_that_returns_is_not_restarted() -> None:
    clock = FakeTime()
    supervisor = Supervisor(POLICY, sleep=clock.sleep, monotonic=clock.monotonic)
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1

    await supervisor.spawn("broker-watchdog", job)

    assert runs == 1
    assert clock.sleeps == []


async def test_cancelling_stops_the_job_and_its_restarts() -> None:
    supervisor = Supervisor(POLICY)
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.Event().wait()

    task = supervisor.spawn("status-listener", job)
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    assert supervisor.healthy


async def test_an_error_raised_while_being_cancelled_ends_as_a_cancellation() -> None:
    clock = FakeTime()
    supervisor = Supervisor(POLICY, sleep=clock.sleep, monotonic=clock.monotonic)
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise OSError("connection closed under the read") from None

    task = supervisor.spawn("status-listener", job)
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    assert clock.sleeps == []
