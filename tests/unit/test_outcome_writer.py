"""Spec of the outcome writer's contract (DESIGN.md §5), not of its batching or timing.

A page is acked only once its outcomes' futures resolve, so: a future resolves only
after its outcome's write returned; a failed write is retried, holding new sends
(`writable` cleared) until one succeeds; `close()` makes one last try and fails the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import pytest

from sender.core.outcome_writer import OutcomeWriter
from sender.core.ports import ContactOutcome
from sender.errors import DependencyUnavailable

DOWN = DependencyUnavailable("postgres", "connection refused")
T = TypeVar("T")


def outcome(n: int) -> ContactOutcome:
    return ContactOutcome.sent("spring-sale", f"c{n}", attempts=1, last_status_code=200)


class FakeLedger:
    """Records each batch written; fails the first `failures` writes; with `hold`, each
    write waits for its own `go` (set once per write). Notes whether outcomes were
    writable when each write began."""

    def __init__(self, failures: int = 0, hold: bool = False) -> None:
        self.failures = failures
        self.hold = hold
        self.go = asyncio.Event()
        self.writing = asyncio.Event()
        self.failed = asyncio.Event()
        self.calls = 0
        self.written: list[ContactOutcome] = []
        self.writable_at_call: list[bool] = []
        self.writer: OutcomeWriter | None = None

    async def write(self, batch: Sequence[ContactOutcome]) -> None:
        self.calls += 1
        assert self.writer is not None
        self.writable_at_call.append(self.writer.writable.is_set())
        self.writing.set()
        if self.hold:
            await self.go.wait()
            self.go.clear()
        if self.failures > 0:
            self.failures -= 1
            self.failed.set()
            raise DOWN
        self.written.extend(batch)


def writer_over(ledger: FakeLedger) -> OutcomeWriter:
    writer = OutcomeWriter(ledger.write, flush_s=0.0, retry_backoff_s=(0.0, 0.0))
    ledger.writer = writer
    return writer


async def bounded(call: Awaitable[T]) -> T:
    async with asyncio.timeout(5):
        return await call


async def test_each_future_resolves_once_its_outcome_is_written() -> None:
    ledger = FakeLedger()
    writer = writer_over(ledger)
    writer.start()

    futures = [writer.submit(outcome(n)) for n in range(3)]
    await bounded(asyncio.gather(*futures))
    await writer.close()

    assert ledger.written == [outcome(0), outcome(1), outcome(2)]


async def test_a_future_is_not_resolved_before_the_write_returns() -> None:
    ledger = FakeLedger(hold=True)
    writer = writer_over(ledger)
    writer.start()

    future = writer.submit(outcome(1))
    await bounded(ledger.writing.wait())
    assert not future.done()

    ledger.go.set()
    await bounded(future)
    await writer.close()

    assert ledger.written == [outcome(1)]


async def test_outcomes_submitted_while_a_write_runs_are_written_too() -> None:
    ledger = FakeLedger(hold=True)
    writer = writer_over(ledger)
    writer.start()
    first = writer.submit(outcome(1))
    await bounded(ledger.writing.wait())

    later = [writer.submit(outcome(n)) for n in (2, 3)]
    ledger.hold = False
    ledger.go.set()
    await bounded(asyncio.gather(first, *later))
    await writer.close()

    assert ledger.written == [outcome(1), outcome(2), outcome(3)]


async def test_a_failed_write_is_retried_until_it_succeeds_and_nothing_is_lost() -> None:
    ledger = FakeLedger(failures=3)
    writer = writer_over(ledger)
    writer.start()

    futures = [writer.submit(outcome(n)) for n in range(2)]
    await bounded(asyncio.gather(*futures))
    await writer.close()

    assert ledger.written == [outcome(0), outcome(1)]  # once each
    assert ledger.calls == 4


async def test_outcomes_are_not_writable_from_a_failed_write_until_one_succeeds() -> None:
    ledger = FakeLedger(failures=2)
    writer = writer_over(ledger)
    writer.start()
    assert writer.writable.is_set()

    await bounded(writer.submit(outcome(1)))
    await writer.close()

    assert ledger.writable_at_call == [True, False, False]
    assert writer.writable.is_set()


async def test_futures_stay_open_while_writes_fail() -> None:
    ledger = FakeLedger(failures=1, hold=True)
    writer = writer_over(ledger)
    writer.start()
    future = writer.submit(outcome(1))
    await bounded(ledger.writing.wait())

    ledger.writing.clear()
    ledger.go.set()  # the first write fails; the retry waits for go again
    await bounded(ledger.failed.wait())
    await bounded(ledger.writing.wait())

    assert not future.done()
    assert not writer.writable.is_set()
    ledger.go.set()
    await bounded(future)
    await writer.close()


async def test_close_flushes_what_is_queued() -> None:
    ledger = FakeLedger()
    writer = writer_over(ledger)  # never started: only close writes

    futures = [writer.submit(outcome(n)) for n in range(3)]
    await writer.close()

    assert all(future.done() for future in futures)
    assert all(future.exception() is None for future in futures)
    assert ledger.written == [outcome(0), outcome(1), outcome(2)]
    assert ledger.calls == 1


async def test_close_tries_once_and_fails_what_it_could_not_write() -> None:
    ledger = FakeLedger(failures=1)
    writer = writer_over(ledger)

    futures = [writer.submit(outcome(n)) for n in range(2)]
    await writer.close()

    assert ledger.calls == 1
    for future in futures:
        with pytest.raises(DependencyUnavailable):
            await future


async def test_close_during_failing_writes_makes_one_last_try_then_fails_the_rest() -> None:
    ledger = FakeLedger(failures=10**6)
    writer = writer_over(ledger)
    writer.start()
    future = writer.submit(outcome(1))
    await bounded(ledger.failed.wait())

    calls_before_close = ledger.calls
    await bounded(writer.close())

    assert ledger.calls == calls_before_close + 1
    with pytest.raises(DependencyUnavailable):
        await future


async def test_close_with_a_write_in_flight_still_writes_its_outcomes() -> None:
    ledger = FakeLedger(hold=True)
    writer = writer_over(ledger)
    writer.start()
    future = writer.submit(outcome(1))
    await bounded(ledger.writing.wait())

    ledger.go.set()
    await bounded(writer.close())

    assert future.done()
    assert future.exception() is None
    assert outcome(1) in ledger.written
