"""Kill -9 duplicates before and after group commit: `sigkill_while_sending` (20 kills
over 10,000 contacts, 100 in flight, inbox answering in 20 ms) with the fixed-delay
writer of before (tests/benchmarks/fixed_delay_consumer.py) and today's, alternating."""

from __future__ import annotations

import asyncio
import os

from tests.faults.run import FaultRun, sigkill_while_sending
from tests.integration.support import SENDER_RUN

BEFORE = ("-m", "tests.benchmarks.fixed_delay_consumer")
AFTER = SENDER_RUN


async def _pairs(pairs: int) -> list[tuple[str, FaultRun, float]]:
    rows = []
    for number in range(1, pairs + 1):
        for writer, command in (("fixed delay (before)", BEFORE), ("group commit (now)", AFTER)):
            load = os.getloadavg()[0]
            run = await sigkill_while_sending(command=command)
            rows.append((f"{writer}, run {number}", run, load))
    return rows


def section(pairs: int = 2) -> list[str]:
    """The kill -9 section of docs/PERFORMANCE.md."""
    rows = asyncio.run(_pairs(pairs))
    return [
        "`sigkill_while_sending` from tests/faults/run.py: one consumer,"
        " `DISPATCH_CONCURRENCY=100`, inbox answering in 20 ms, 10,000 contacts, SIGKILLed up to"
        " 20 times (each once another 1/21 of the contacts was POSTed, so every kill lands"
        " mid-stream; a consumer that ran ahead of the count finishes with fewer) and restarted"
        ' each time. "Before" runs the consumer with the outcome'
        " writer as it was before group commit (a fixed `OUTCOME_FLUSH_MS` sleep before each"
        " write, one batch at a time: tests/benchmarks/fixed_delay_consumer.py).",
        "",
        "| writer | kills | duplicate POSTs | per kill | lost | dead-lettered | load |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {r.runs} | {r.duplicates:,} | {r.duplicates / max(r.runs, 1):.1f}"
            f" | {r.lost} | {r.dead}"
            f" | {load:.1f} |"
            for name, r, load in rows
        ),
    ]


if __name__ == "__main__":
    print("\n".join(section()))
