"""Group commit of outcomes: write at once when idle, batch whatever queues meanwhile.

An idle writer writes an outcome the moment it is submitted. While a write is in flight,
outcomes queue and all go in the next write, which starts as soon as that one finishes.
`OUTCOME_FLUSH_MS` is the longest an outcome waits: when the write in flight takes
longer, a second write starts beside it (at most `max_writes` at once), so a slow
statement does not hold later outcomes hostage.

Each submitted outcome gets a future that resolves once its batch is committed; a page
is acked only after all of its futures resolve. A failed write is retried (the futures
stay open, so nothing is acked) until it succeeds or the writer is closed; while one is
failing no other write starts beside it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sender.core.policy import doubling_delay
from sender.core.ports import ContactOutcome, Spawn, spawn_unsupervised

log = logging.getLogger(__name__)

WriteBatch = Callable[[Sequence[ContactOutcome]], Awaitable[None]]
_Queued = tuple[ContactOutcome, "asyncio.Future[None]", float]


class OutcomeWriter:
    """Collects outcomes and writes them in group commits from one background task."""

    def __init__(
        self,
        write: WriteBatch,
        *,
        flush_s: float,
        max_batch: int = 2000,
        max_writes: int = 2,
        retry_backoff_s: tuple[float, float] = (0.2, 5.0),
        monotonic: Callable[[], float] = time.monotonic,
        close_grace_s: float = 1.0,
    ) -> None:
        self._write = write
        self._flush_s = flush_s
        self._max_batch = max_batch
        self._max_writes = max_writes
        self._retry_backoff_s = retry_backoff_s
        self._monotonic = monotonic
        self._pending: list[_Queued] = []
        self._has_work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._crashed: BaseException | None = None
        self._closing = False
        self._close_grace_s = close_grace_s
        self._failing = 0
        self._writable = asyncio.Event()
        self._writable.set()

    def start(self, spawn: Spawn = spawn_unsupervised) -> None:
        """Start the background flusher (under a supervisor when `spawn` is one's)."""
        self._task = spawn("outcome-writer", self._run)

    @property
    def writable(self) -> asyncio.Event:
        """Set while the last write succeeded: no new sends while outcomes cannot be kept."""
        return self._writable

    def submit(self, outcome: ContactOutcome) -> asyncio.Future[None]:
        """Queue `outcome`; the future resolves when it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future, self._monotonic()))
        self._has_work.set()
        return future

    async def close(self) -> None:
        """Flush what is queued (one try), then stop; unwritten outcomes fail their futures."""
        # Writes in flight get `close_grace_s` to finish the statement they are in, and
        # retry no more; asyncio.wait (unlike awaiting the tasks) lets a cancellation of
        # close() itself through.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        if self._writes:
            _, late = await asyncio.wait(list(self._writes), timeout=self._close_grace_s)
            for write in late:
                write.cancel()
            if late:
                await asyncio.wait(late)
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write([outcome for outcome, _, _ in batch])
            except Exception as error:
                _settle(batch, error)
            else:
                _settle(batch, None)

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            self._raise_if_a_write_crashed()
            await self._wait_for_a_turn()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._has_work.clear()
            write = asyncio.create_task(self._write_batch(batch), name="outcome-write")
            self._writes.add(write)
            write.add_done_callback(self._write_done)

    async def _write_batch(self, batch: list[_Queued]) -> None:
        try:
            await self._write_until_done(batch)
        except BaseException:
            # close() or the restarted flusher gets another try at these.
            self._pending[:0] = batch
            self._has_work.set()
            raise

    def _write_done(self, write: asyncio.Task[None]) -> None:
        self._writes.discard(write)
        if write.cancelled() or isinstance(write.exception(), _WriterClosed):
            return
        if write.exception() is not None:
            self._crashed = write.exception()
            self._has_work.set()

    def _raise_if_a_write_crashed(self) -> None:
        """A write that raised unexpectedly ends the flusher too, so its supervisor sees it
        (and restarts it with backoff) instead of the write dying silently."""
        crashed, self._crashed = self._crashed, None
        if crashed is not None:
            raise crashed

    async def _wait_for_a_turn(self) -> None:
        """Return when the next write may start: nothing in flight, or the oldest queued
        outcome has waited `flush_s` and another write may run beside the ones in flight."""
        while in_flight := [write for write in self._writes if not write.done()]:
            full = len(self._pending) >= self._max_batch
            may_overlap = len(in_flight) < self._max_writes and self._failing == 0
            waited = self._monotonic() - self._pending[0][2]
            if may_overlap and (full or waited >= self._flush_s):
                return
            timeout = max(self._flush_s - waited, 0.0) if may_overlap else None
            await asyncio.wait(in_flight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def _write_until_done(self, batch: list[_Queued]) -> None:
        """Write `batch` until it commits; a failing one stops retrying once the writer closes."""
        failed = False
        try:
            for attempt in itertools.count(1):
                try:
                    await self._write([outcome for outcome, _, _ in batch])
                except Exception as error:
                    if not failed:
                        failed = True
                        self._failing += 1
                    self._writable.clear()
                    log.warning(
                        "outcome write failed; holding %d outcomes and new sends (%s)",
                        len(batch),
                        type(error).__name__,
                        extra={"error": str(error)},
                    )
                    if not self._closing:
                        await asyncio.sleep(doubling_delay(attempt, *self._retry_backoff_s))
                    if self._closing:  # checked after the sleep too: close() came meanwhile
                        raise _WriterClosed from error
                    continue
                if failed:
                    failed = False
                    self._failing -= 1
                if self._failing == 0:
                    self._writable.set()
                _settle(batch, None)
                return
            raise AssertionError("unreachable")  # itertools.count never ends
        finally:
            if failed:
                self._failing -= 1


class _WriterClosed(Exception):
    """A failing write gave up because the writer is closing (its batch is queued again)."""


def _settle(batch: list[_Queued], error: Exception | None) -> None:
    for _, future, _ in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
