"""Virtual time for asyncio code under test: sleeps end when the clock is moved, never really."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# Loop turns with nothing due before the clock jumps to the next deadline: enough for the
# code under test to run until it sleeps again (it never needs more than a few).
_SETTLE_TURNS = 20


class FakeTime:
    """A monotonic clock with a `sleep` and `call_later` on it, driven by `running()`.

    While running, whenever the loop has been idle for a few turns, the clock jumps to the
    earliest deadline and wakes what was due, so waits cost no real time and are exact.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._due: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Return once the clock has moved `seconds` on."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_later(seconds, lambda: woken.done() or woken.set_result(None))
        await woken

    def call_later(self, seconds: float, callback: Callable[[], object]) -> None:
        """Run `callback` once the clock has moved `seconds` on."""
        heapq.heappush(self._due, (self.now + seconds, next(self._order), callback))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeTime]:
        """Drive the clock in the background for the duration of the block."""
        driver = asyncio.create_task(self._drive())
        try:
            yield self
        finally:
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)

    async def _drive(self) -> None:
        while True:
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
            if self._due:
                deadline, _, callback = heapq.heappop(self._due)
                self.now = max(self.now, deadline)
                callback()
