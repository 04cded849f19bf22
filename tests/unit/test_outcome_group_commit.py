"""Group commit: an idle writer writes at once; outcomes queued during a write go in the next."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sender.core.outcome_writer import OutcomeWriter
from sender.core.ports import ContactOutcome

LONG_FLUSH_S = 60.0  # far longer than any test: a writer that waits for it times the test out


def outcome(contact_id: str) -> ContactOutcome:
    return ContactOutcome("camp", contact_id, "sent", attempts=1)


class GatedStore:
    """A ledger whose writes block until the test opens them one at a time."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.started = asyncio.Queue[list[str]]()
        self.gates: list[asyncio.Event] = []
        self.failures = failures
        self.auto = False

    async def write(self, batch: Sequence[ContactOutcome]) -> None:
        ids = [o.contact_id for o in batch]
        gate = asyncio.Event()
        if self.auto:
            gate.set()
        self.gates.append(gate)
        self.started.put_nowait(ids)
        await gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ledger down")
        self.batches.append(ids)

    def open_next(self) -> None:
        next(gate for gate in self.gates if not gate.is_set()).set()


async def test_an_idle_writer_writes_the_first_outcome_at_once() -> None:
    store = GatedStore()
    store.auto = True
    writer = OutcomeWriter(store.write, flush_s=LONG_FLUSH_S)
    writer.start()

    await asyncio.wait_for(writer.submit(outcome("a")), 5)

    assert store.batches == [["a"]]
    await writer.close()


async def test_outcomes_queued_during_a_write_all_go_in_the_next_write() -> None:
    store = GatedStore()
    writer = OutcomeWriter(store.write, flush_s=LONG_FLUSH_S)
    writer.start()
    first = writer.submit(outcome("a"))
    assert await asyncio.wait_for(store.started.get(), 5) == ["a"]
    later = [writer.submit(outcome(c)) for c in "bcde"]

    store.open_next()
    await first
    assert await asyncio.wait_for(store.started.get(), 5) == ["b", "c", "d", "e"]
    assert not any(f.done() for f in later)
    store.open_next()
    await asyncio.wait_for(asyncio.gather(*later), 5)

    assert store.batches == [["a"], ["b", "c", "d", "e"]]
    await writer.close()


async def test_a_write_slower_than_the_flush_time_lets_a_second_write_start_beside_it() -> None:
    store = GatedStore()
    writer = OutcomeWriter(store.write, flush_s=0.01)
    writer.start()
    writer.submit(outcome("a"))
    await asyncio.wait_for(store.started.get(), 5)

    queued = writer.submit(outcome("b"))  # "a" is still being written

    assert await asyncio.wait_for(store.started.get(), 5) == ["b"]
    store.gates[1].set()
    await asyncio.wait_for(queued, 5)
    store.gates[0].set()
    await writer.close()


async def test_no_more_than_max_writes_run_at_once() -> None:
    store = GatedStore()
    writer = OutcomeWriter(store.write, flush_s=0.0, max_writes=2)
    writer.start()
    writer.submit(outcome("a"))
    await asyncio.wait_for(store.started.get(), 5)
    writer.submit(outcome("b"))
    await asyncio.wait_for(store.started.get(), 5)

    third = writer.submit(outcome("c"))
    for _ in range(20):
        await asyncio.sleep(0)  # let the writer loop run; it must keep "c" queued

    assert store.started.empty()
    store.gates[0].set()
    assert await asyncio.wait_for(store.started.get(), 5) == ["c"]
    store.auto = True
    for gate in store.gates:
        gate.set()
    await asyncio.wait_for(third, 5)
    await writer.close()


async def test_a_full_batch_is_cut_at_max_batch() -> None:
    store = GatedStore()
    writer = OutcomeWriter(store.write, flush_s=LONG_FLUSH_S, max_batch=3, max_writes=1)
    writer.start()
    writer.submit(outcome("a"))
    await asyncio.wait_for(store.started.get(), 5)
    rest = [writer.submit(outcome(c)) for c in "bcdef"]
    store.auto = True

    store.open_next()
    await asyncio.wait_for(asyncio.gather(*rest), 5)

    assert store.batches == [["a"], ["b", "c", "d"], ["e", "f"]]
    await writer.close()


async def test_a_failed_write_is_retried_and_clears_writable_until_it_succeeds() -> None:
    store = GatedStore(failures=2)
    store.auto = True
    writer = OutcomeWriter(store.write, flush_s=LONG_FLUSH_S, retry_backoff_s=(0.0, 0.0))
    writable_seen: list[bool] = []
    original = store.write

    async def watching(batch: Sequence[ContactOutcome]) -> None:
        writable_seen.append(writer.writable.is_set())
        await original(batch)

    writer._write = watching
    writer.start()

    await asyncio.wait_for(writer.submit(outcome("a")), 5)

    assert writable_seen == [True, False, False]
    assert writer.writable.is_set()
    assert store.batches == [["a"]]
    await writer.close()


async def test_no_write_starts_beside_a_failing_one() -> None:
    store = GatedStore(failures=1)
    writer = OutcomeWriter(store.write, flush_s=0.0, retry_backoff_s=(0.0, 0.0))
    writer.start()
    first = writer.submit(outcome("a"))
    await asyncio.wait_for(store.started.get(), 5)
    store.open_next()  # fails; the retry blocks on its own gate
    assert await asyncio.wait_for(store.started.get(), 5) == ["a"]

    second = writer.submit(outcome("b"))
    for _ in range(20):
        await asyncio.sleep(0)

    assert store.started.empty()
    store.auto = True
    store.open_next()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert store.batches == [["a"], ["b"]]
    await writer.close()


async def test_close_writes_what_is_still_queued() -> None:
    store = GatedStore()
    writer = OutcomeWriter(store.write, flush_s=LONG_FLUSH_S, max_writes=1)
    writer.start()
    writer.submit(outcome("a"))
    await asyncio.wait_for(store.started.get(), 5)
    queued = writer.submit(outcome("b"))
    store.auto = True

    await writer.close()

    assert queued.done()
    assert queued.exception() is None
    assert ["b"] in store.batches or ["a", "b"] in store.batches
