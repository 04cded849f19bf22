"""Scale figures: `campaign start` of 1 M / 10 M rows against `psql \\copy` of the same file,
`status` query time at that size, and the purge of the campaign (which cleans up).

Run by `make bench` only (the 10 M-row file needs about 320 MB of /tmp and minutes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from sender.adapters.amqp_topology import delete_topology
from tests.benchmarks.bench_start import AMQP_URL, DATABASE_URL, start_args, write_csv

_SUMMARY_SQL = (
    "SELECT k.status, k.inbox_id, n.status AS counted, n.n FROM campaigns AS k"
    " LEFT JOIN campaign_counts AS n USING (campaign_id) WHERE k.campaign_id = $1"
)


@dataclass(frozen=True)
class ScaleRun:
    """One file size's figures."""

    rows: int
    start_s: float
    peak_rss_mib: float
    psql_copy_s: float
    status_query_ms: float
    status_cli_s: float
    purge_s: float
    load: float  # 1-minute load average when the start began

    @property
    def rows_per_s(self) -> float:
        """Rows stored and published per second by `campaign start`."""
        return self.rows / self.start_s


def _sender(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """Run `sender ARGS`; return wall seconds, peak RSS (MiB) and stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "sender", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = (
        process.stdout.read() if process.stdout else "",
        process.stderr.read() if process.stderr else "",
    )
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"sender {' '.join(args)} failed: {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, out


def psql_copy(csv_path: Path) -> float:
    """Seconds `psql \\copy` takes to load the file into a fresh plain table."""
    parts = urlsplit(DATABASE_URL)
    table = f"bench_copy_{uuid.uuid4().hex[:8]}"
    base = ["psql", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    base += ["-U", parts.username or "postgres", "-d", parts.path.lstrip("/") or "postgres"]
    subprocess.run(
        [*base, "-qc", f'CREATE TABLE {table} (contact_id text, "to" text, name text)'],
        check=True,
    )
    try:
        started = time.perf_counter()
        subprocess.run([*base, "-qc", f"\\copy {table} FROM '{csv_path}' CSV HEADER"], check=True)
        return time.perf_counter() - started
    finally:
        subprocess.run([*base, "-qc", f"DROP TABLE {table}"], check=True)


async def status_query_ms(campaign: str, runs: int = 50) -> float:
    """Median server-side time of the `status` read (counts table), in ms."""
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await conn.fetch(_SUMMARY_SQL, campaign)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return sorted(times)[len(times) // 2]


def scale_run(rows: int) -> ScaleRun:
    """Start a `rows`-row campaign, read its status, then stop and purge it (cleanup)."""
    token = uuid.uuid4().hex[:10]
    campaign, queue = f"bench-scale-{token}", f"bench.{token}.pages"
    env = {**os.environ, "PAGES_QUEUE": queue}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        write_csv(csv_path, rows)
        copy_s = psql_copy(csv_path)
        load = os.getloadavg()[0]
        try:
            start_s, rss, _ = _sender(env, *start_args(campaign, csv_path))
            status_ms = asyncio.run(status_query_ms(campaign))
            status_s, _, _ = _sender(env, "campaign", "status", campaign, "--json")
            _sender(env, "campaign", "stop", campaign)
            purge_s, _, _ = _sender(env, "campaign", "purge", campaign)
        finally:
            asyncio.run(_cleanup(campaign, queue))
    return ScaleRun(rows, start_s, rss, copy_s, status_ms, status_s, purge_s, load)


async def _cleanup(campaign: str, queue: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    await conn.execute("DELETE FROM campaigns WHERE campaign_id = $1", campaign)
    await conn.close()
    await delete_topology(AMQP_URL, queue)


def section(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> list[str]:
    """The "Scale" section of docs/PERFORMANCE.md."""
    runs = [scale_run(rows) for rows in sizes]
    return [
        "`sender campaign start` of a generated CSV (`contact_id,to,name`), stored with COPY",
        "and published in 1,000-contact pages with confirms; `psql \\copy` of the same file",
        "into a plain table without indexes in the same run; the `status` read (campaign row",
        "and its kept counts) timed 50 times, median; then `campaign purge` (10,000-row",
        "transactions), which also cleans up.",
        "",
        "| rows | start | rows/s | peak RSS | psql \\copy | ratio | status query | status CLI"
        " | purge | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r.rows:,} | {r.start_s:.1f} s | {r.rows_per_s:,.0f} | {r.peak_rss_mib:.0f} MiB"
            f" | {r.psql_copy_s:.2f} s | {r.start_s / r.psql_copy_s:.1f}×"
            f" | {r.status_query_ms:.2f} ms"
            f" | {r.status_cli_s:.2f} s | {r.purge_s:.1f} s | {r.load:.1f} |"
            for r in runs
        ),
    ]


if __name__ == "__main__":
    sizes = tuple(int(arg) for arg in sys.argv[1:]) or (1_000_000,)
    print("\n".join(section(sizes)))
