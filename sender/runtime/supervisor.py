"""Background tasks that restart when they crash, and give up loudly when they keep crashing.

    job raises  ->  log it  ->  sleep restart_delay(n)  ->  run job again
    more than `max_restarts` crashes within `window_s`  ->  `failed` is set: readiness
    goes false and `sender run` exits non-zero, so the pod restarts

A job that returns ends for good (a rate pump with no waiters left, the broker watchdog
giving up); cancelling the task stops it. No task dies silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sender.core.policy import doubling_delay
from sender.core.ports import BackgroundJob

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts (`min(base · 2^(n-1), cap)`) and when to stop trying."""

    base_s: float = 0.5
    cap_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 300.0


def restart_delay(crashes: Sequence[float], now: float, policy: RestartPolicy) -> float | None:
    """Seconds before the next restart, given the crash times so far (this one last).

    Only crashes within `window_s` of `now` count; more than `max_restarts` of them
    means give up (None). The n-th recent crash waits `min(base · 2^(n-1), cap)`.
    """
    recent = sum(1 for at in crashes if now - at < policy.window_s)
    if recent > policy.max_restarts:
        return None
    return doubling_delay(max(1, recent), policy.base_s, policy.cap_s)


_NO_JITTER = random.Random(0)  # jitter "none" never draws


class Supervisor:
    """Runs every background task of a process; `failed` is set once one gave up."""

    def __init__(
        self,
        policy: RestartPolicy = RestartPolicy(),
        *,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._sleep = sleep
        self._monotonic = monotonic
        self.failed = asyncio.Event()
        self.gave_up_on: str | None = None
        self.restarts = 0

    @property
    def healthy(self) -> bool:
        """False once a task crashed too often to go on."""
        return not self.failed.is_set()

    def spawn(self, name: str, job: BackgroundJob) -> asyncio.Task[None]:
        """Run `job()` in a task named `name`, restarting it with backoff when it raises."""
        return asyncio.create_task(self._supervise(name, job), name=name)

    async def _supervise(self, name: str, job: BackgroundJob) -> None:
        crashes: list[float] = []
        while True:
            try:
                await job()
                return
            except Exception as error:
                if _being_cancelled():
                    raise asyncio.CancelledError from error  # stopped while failing
                now = self._monotonic()
                crashes = [at for at in crashes if now - at < self._policy.window_s] + [now]
                delay = restart_delay(crashes, now, self._policy)
                if delay is None:
                    self._give_up(name, len(crashes), error)
                    return
                self.restarts += 1
                log.error(
                    "background task %s crashed; restarting in %.1f s",
                    name,
                    delay,
                    exc_info=error,
                    extra={"task": name, "restart_in_s": delay},
                )
            await self._sleep(delay)

    def _give_up(self, name: str, crashes: int, error: Exception) -> None:
        log.critical(
            "background task %s crashed %d times in %.0f s; giving up, the process will exit",
            name,
            crashes,
            self._policy.window_s,
            exc_info=error,
            extra={"task": name},
        )
        self.gave_up_on = self.gave_up_on or name
        self.failed.set()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
