"""Capacity model inputs: what one contact costs PostgreSQL, Redis and RabbitMQ.

One consumer drains `count` contacts (pages of 1,000 published straight to the queue, a
fake inbox answering at once) against a private PostgreSQL and a private Redis started
for the run, so the deltas are this run's alone: WAL bytes (`pg_current_wal_lsn()`),
rows written (`pg_stat_user_tables`), round trips (counted on the wire by a proxy),
Redis commands (`INFO commandstats`) and the pages published and acked.

Run by `make bench` (the "capacity" section) or `python -m tests.benchmarks.bench_capacity`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.integration.private_services import PrivatePostgres, PrivateRedis

_ROWS_SQL = """
SELECT coalesce(sum(n_tup_ins), 0) AS ins, coalesce(sum(n_tup_upd), 0) AS upd,
       coalesce(sum(n_tup_hot_upd), 0) AS hot
  FROM pg_stat_user_tables
"""
PAGE = 1000


@dataclass(frozen=True)
class Costs:
    """Per-contact costs of one run."""

    contacts: int
    round_trips: float
    rows_inserted: float
    rows_updated: float
    hot_updates: float
    wal_bytes: float
    redis_commands: dict[str, float]
    amqp_messages: float
    pg_cpu_us: float
    redis_cpu_us: float
    per_sec: float
    load: float


def _pg_bindir() -> Path:
    found = shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl"
    return Path(found).resolve().parent


def _cpu_s(pid: int, children: bool) -> float:
    """CPU seconds (user + system) of `pid`, or of its children (a postmaster's backends)."""
    pids = [pid]
    if children:
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
    total = 0
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _pid(service: PrivatePostgres | PrivateRedis) -> int:
    process = service._process  # the harness keeps no public handle on it
    assert process is not None
    return process.pid


def _redis_calls(port: int) -> dict[str, int]:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "commandstats"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    calls: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line.removeprefix("cmdstat_").partition(":")
            calls[name] = int(stats.split(",")[0].removeprefix("calls="))
    return calls


def _wal_lsn(url: str) -> int:
    out = subprocess.run(
        ["psql", url, "-Atc", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(float(out.strip()))


async def _rows(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        row = await conn.fetchrow(_ROWS_SQL)
    finally:
        await conn.close()
    assert row is not None
    return int(row["ins"]), int(row["upd"]), int(row["hot"])


def measure(count: int = 20_000) -> Costs:
    """Start private PostgreSQL and Redis, drain `count` contacts, return per-contact costs."""
    pg, redis = PrivatePostgres(_pg_bindir()), PrivateRedis()
    try:
        pg.start()
        redis.start()
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = pg.url, redis.url
        env = {**os.environ}
        subprocess.run([sys.executable, "-m", "sender", "db", "migrate"], env=env, check=True)
        return asyncio.run(_drain(count, pg, redis))
    finally:
        redis.close()
        pg.close()


async def _drain(count: int, pg: PrivatePostgres, redis: PrivateRedis) -> Costs:
    # imported here: its module reads DATABASE_URL / REDIS_URL when imported
    from tests.benchmarks import bench_throughput as bench
    from tests.benchmarks.pg_round_trips import RoundTripCounter

    marks: dict[str, tuple[int, dict[str, int], int, float, float]] = {}
    pg_pid, redis_pid = _pid(pg), _pid(redis)

    def mark(moment: str) -> None:
        marks[moment] = (
            _wal_lsn(pg.url),
            _redis_calls(redis.port),
            counter.round_trips,
            _cpu_s(pg_pid, children=True),
            _cpu_s(redis_pid, children=False),
        )

    before = await _rows(pg.url)
    load = os.getloadavg()[0]
    async with bench.fake_inbox_process() as inbox, RoundTripCounter(pg.url) as counter:
        run = await bench.sender_consumers(inbox, count, database_url=counter.url, on_phase=mark)
    # the consumer has exited (its counters flushed); the campaign delete is not counted:
    # only inserts and updates are read
    after = await _rows(pg.url)
    (wal0, redis0, trips0, pg0, rd0), (wal1, redis1, trips1, pg1, rd1) = (
        marks["ready"],
        marks["end"],
    )
    commands = {
        name: (redis1.get(name, 0) - redis0.get(name, 0)) / count
        for name in sorted(redis1)
        if redis1.get(name, 0) - redis0.get(name, 0) > 0 and name != "info"
    }
    pages = -(-count // PAGE)
    return Costs(
        count,
        (trips1 - trips0) / count,
        (after[0] - before[0]) / count,
        (after[1] - before[1]) / count,
        (after[2] - before[2]) / count,
        (wal1 - wal0) / count,
        commands,
        3 * pages / count,  # each page: one publish, one delivery, one ack
        (pg1 - pg0) / count * 1e6,
        (rd1 - rd0) / count * 1e6,
        run.per_sec,
        load,
    )


def section(count: int = 20_000) -> list[str]:
    """The measured per-contact costs, as lines of docs/PERFORMANCE.md."""
    c = measure(count)
    redis_total = sum(c.redis_commands.values())
    redis_detail = ", ".join(f"{name} {n:.3f}" for name, n in c.redis_commands.items())
    return [
        f"One consumer, {c.contacts:,} contacts in pages of {PAGE:,}, fake inbox answering at"
        f" once, private PostgreSQL and Redis (load average {c.load:.1f};"
        f" {c.per_sec:,.0f} contacts/s through the round-trip proxy):",
        "",
        "| per contact | measured |",
        "|---|---|",
        f"| PostgreSQL round trips | {c.round_trips:.4f} |",
        f"| rows inserted | {c.rows_inserted:.3f} |",
        f"| rows updated (of which HOT) | {c.rows_updated:.3f} ({c.hot_updates:.3f}) |",
        f"| WAL bytes | {c.wal_bytes:,.0f} |",
        f"| Redis commands | {redis_total:.3f} ({redis_detail}) |",
        f"| RabbitMQ messages (publish + deliver + ack of pages) | {c.amqp_messages:.3f} |",
        f"| PostgreSQL server CPU (all backends) | {c.pg_cpu_us:.0f} µs |",
        f"| Redis server CPU | {c.redis_cpu_us:.1f} µs |",
    ]


if __name__ == "__main__":
    print("\n".join(section(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)))
