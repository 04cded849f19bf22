"""A running campaign's throughput while a finished 1 M-contact campaign is purged.

One consumer drains `count` contacts twice: alone, then with `sender campaign purge` of a
stopped `rows`-contact campaign started at the same moment (10,000-row transactions).
The purge must outlast the drain for the second figure to be "during a purge".

Run by `make bench` (the "purge" section) or `python -m tests.benchmarks.bench_purge`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sender.adapters.amqp_topology import delete_topology
from tests.benchmarks.bench_scale import _sender
from tests.benchmarks.bench_start import AMQP_URL, write_csv
from tests.benchmarks.bench_throughput import fake_inbox_process, sender_consumers


def _stopped_campaign(rows: int) -> str:
    """A stopped campaign of `rows` contacts (its pages went to a queue deleted here)."""
    token = uuid.uuid4().hex[:10]
    campaign, queue = f"bench-purge-{token}", f"bench.{token}.pages"
    env = {**os.environ, "PAGES_QUEUE": queue}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        write_csv(csv_path, rows)
        start = ["campaign", "start", "--campaign", campaign, "--inbox", "inbox-1"]
        _sender(env, *start, "--message", "{}", "--contacts", str(csv_path))
    _sender(env, "campaign", "stop", campaign)
    asyncio.run(delete_topology(AMQP_URL, queue))
    return campaign


async def _drains(count: int, campaign: str) -> tuple[float, float, float, float, float]:
    """Contacts/s alone, contacts/s during the purge, the drain's and the purge's seconds,
    and the load average when the purge began."""
    purge: list[tuple[subprocess.Popen[bytes], float]] = []

    def start_purge(moment: str) -> None:
        if moment == "ready":
            command = [sys.executable, "-m", "sender", "campaign", "purge", campaign]
            purge.append((subprocess.Popen(command, stdout=subprocess.DEVNULL), time.monotonic()))

    async with fake_inbox_process() as inbox:
        alone = await sender_consumers(inbox, count)
        load = os.getloadavg()[0]
        began = time.monotonic()
        during = await sender_consumers(inbox, count, on_phase=start_purge)
        drained = time.monotonic() - began
    process, started = purge[0]
    await asyncio.to_thread(process.wait)
    if process.returncode != 0:
        raise RuntimeError(f"purge failed with {process.returncode}")
    return alone.per_sec, during.per_sec, drained, time.monotonic() - started, load


def section(rows: int = 1_000_000, count: int = 20_000) -> list[str]:
    """The purge-while-sending figures, as lines of docs/PERFORMANCE.md."""
    campaign = _stopped_campaign(rows)
    alone, during, drained, purged, load = asyncio.run(_drains(count, campaign))
    change = (during - alone) / alone * 100
    overlap = "the whole drain ran during it" if purged >= drained else "it ended first"
    return [
        f"One consumer draining {count:,} contacts (fake inbox answering at once), alone and"
        f" while `sender campaign purge` deletes a stopped {rows:,}-contact campaign",
        f"(load average {load:.1f} when the purge began):",
        "",
        "| run | contacts/s |",
        "|---|---|",
        f"| alone | {alone:,.0f} |",
        f"| during the purge | {during:,.0f} ({change:+.0f} %) |",
        "",
        f"The purge took {purged:.1f} s and the drain beside it {drained:.1f} s ({overlap}).",
    ]


if __name__ == "__main__":
    print("\n".join(section()))
