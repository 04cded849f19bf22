"""Batched outcome writes: at most `OUTCOME_FLUSH_MS` of waiting, one statement per batch.

Each submitted outcome gets a future that resolves once its batch is committed; a page
is acked only after all of its futures resolve. A failed write is retried (the futures
stay open, so nothing is acked) until it succeeds or the writer is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from sender.core.ports import ContactOutcome, Spawn, spawn_unsupervised

log = logging.getLogger(__name__)

WriteBatch = Callable[[Sequence[ContactOutcome]], Awaitable[None]]


class OutcomeWriter:
    """Collects outcomes and writes them in batches from one background task."""

    def __init__(
        self,
        write: WriteBatch,
        *,
        flush_s: float,
        max_batch: int = 2000,
        retry_backoff_s: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self._write = write
        self._flush_s = flush_s
        self._max_batch = max_batch
        self._retry_backoff_s = retry_backoff_s
        self._pending: list[tuple[ContactOutcome, asyncio.Future[None]]] = []
        self._has_work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
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
        self._pending.append((outcome, future))
        self._has_work.set()
        return future

    async def close(self) -> None:
        """Flush what is queued (one try), then stop; unwritten outcomes fail their futures."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write([outcome for outcome, _ in batch])
            except Exception as error:
                _settle(batch, error)
            else:
                _settle(batch, None)

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if len(self._pending) < self._max_batch:
                await asyncio.sleep(self._flush_s)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._has_work.clear()
            try:
                await self._write_until_done(batch)
            except BaseException:
                # close() or the restarted flusher gets another try at these.
                self._pending[:0] = batch
                self._has_work.set()
                raise

    async def _write_until_done(
        self, batch: list[tuple[ContactOutcome, asyncio.Future[None]]]
    ) -> None:
        delay, cap = self._retry_backoff_s
        while True:
            try:
                await self._write([outcome for outcome, _ in batch])
            except Exception as error:
                self._writable.clear()
                log.warning(
                    "outcome write failed; holding %d outcomes and new sends (%s)",
                    len(batch),
                    type(error).__name__,
                    extra={"error": str(error)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
                continue
            self._writable.set()
            _settle(batch, None)
            return


def _settle(
    batch: list[tuple[ContactOutcome, asyncio.Future[None]]], error: Exception | None
) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
