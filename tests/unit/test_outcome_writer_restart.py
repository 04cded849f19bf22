"""The outcome flusher under a supervisor: a crash loses no outcome and no commit waits forever."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sender.core.outcome_writer import OutcomeWriter
from sender.core.ports import ContactOutcome
from sender.runtime.supervisor import RestartPolicy, Supervisor


async def test_a_crashed_flusher_is_restarted_and_commits_the_batch_it_held() -> None:
    written: list[str] = []

    async def write(batch: Sequence[ContactOutcome]) -> None:
        written.extend(outcome.contact_id for outcome in batch)

    writer = OutcomeWriter(write, flush_s=0.001)
    real_write_until_done = writer._write_until_done
    crashes = 0

    async def crash_once(batch: list[tuple[ContactOutcome, asyncio.Future[None]]]) -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("unexpected")
        await real_write_until_done(batch)

    writer._write_until_done = crash_once  # type: ignore[method-assign]
    supervisor = Supervisor(RestartPolicy(base_s=0.001, cap_s=0.001))
    writer.start(supervisor.spawn)
    try:
        commit = writer.submit(ContactOutcome("k", "c-1", "sent", attempts=1))
        async with asyncio.timeout(2):
            await commit
    finally:
        await writer.close()

    assert written == ["c-1"]
    assert supervisor.restarts == 1
