"""`sender campaign start` of a 100,000-row CSV: wall time until every page is confirmed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from sender.adapters.amqp_topology import delete_topology

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def write_csv(path: Path, rows: int) -> None:
    """A contacts CSV with one variable column."""
    with path.open("w") as out:
        out.write("contact_id,to,name\n")
        for i in range(rows):
            out.write(f"c-{i:06d},+5511{i:09d},Name{i % 97}\n")


def start_args(campaign: str, contacts: Path) -> list[str]:
    """The `sender campaign start` arguments the benchmarks use for `campaign`'s CSV."""
    return [
        "campaign",
        "start",
        "--campaign",
        campaign,
        "--inbox",
        "inbox-1",
        "--message",
        '{"text": "hi"}',
        "--contacts",
        str(contacts),
    ]


def campaign_start(
    env: dict[str, str], campaign: str, contacts: Path
) -> subprocess.CompletedProcess[str]:
    """Run `sender campaign start` for `campaign` from the CSV at `contacts`."""
    return subprocess.run(
        [sys.executable, "-m", "sender", *start_args(campaign, contacts)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def time_start(rows: int = 100_000) -> float:
    """Seconds `sender campaign start` takes for `rows` contacts (fresh campaign and queue)."""
    token = uuid.uuid4().hex[:10]
    campaign, queue = f"bench-{token}", f"bench.{token}.pages"
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        write_csv(csv_path, rows)
        started = time.perf_counter()
        result = campaign_start({**os.environ, "PAGES_QUEUE": queue}, campaign, csv_path)
        elapsed = time.perf_counter() - started
    asyncio.run(_cleanup(campaign, queue))
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return elapsed


async def _cleanup(campaign: str, queue: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    await conn.execute("DELETE FROM campaigns WHERE campaign_id = $1", campaign)
    await conn.close()
    await delete_topology(AMQP_URL, queue)


if __name__ == "__main__":
    print(f"{time_start():.2f} s")
