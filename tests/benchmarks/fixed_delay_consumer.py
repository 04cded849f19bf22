"""`sender run` with the outcome writer as it was before group commit (commit 518a6e7): a
fixed `OUTCOME_FLUSH_MS` sleep before each write and one batch at a time. Only the kill -9
benchmark runs it, as the "before" of its before/after pair (bench_kill9.py)."""

from __future__ import annotations

import asyncio
import sys

from sender.cli import main
from sender.core.outcome_writer import OutcomeWriter
from sender.runtime import consumer_app


class FixedDelayWriter(OutcomeWriter):
    """Sleeps the flush time before every write, then writes one batch and waits for it."""

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if len(self._pending) < self._max_batch:
                await asyncio.sleep(self._flush_s)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._has_work.clear()
            await self._write_batch(batch)


if __name__ == "__main__":
    consumer_app.OutcomeWriter = FixedDelayWriter  # type: ignore[attr-defined]
    sys.argv = ["sender", "run"]
    main()
