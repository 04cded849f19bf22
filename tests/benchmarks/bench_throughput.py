"""Throughput of one consumer process against bare HTTP client loops, same fake inbox.

The fake inbox runs in its own process and answers 200 at once; the rate limit is far
above what is reachable. Every figure is contacts (or requests) per second from the
first to the last POST the fake inbox received.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import httpx
import orjson

from sender.adapters.amqp_topology import delete_topology
from sender.settings import Settings
from tests.benchmarks.bench_start import campaign_start, write_csv
from tests.benchmarks.pg_round_trips import RoundTripCounter
from tests.integration.support import (
    AMQP_URL,
    DATABASE_URL,
    free_port,
    make_page,
    settings_env,
)

CONCURRENCY = 200


@dataclass
class FakeInboxProcess:
    """A fake inbox serving in a process of its own."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/inboxes/{{inbox_id}}/messages"

    async def stats(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/stats")
        return dict(response.json())


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@asynccontextmanager
async def fake_inbox_process() -> AsyncIterator[FakeInboxProcess]:
    """Start `python -m sender.testing.fake_inbox` and wait until it answers."""
    port = free_port()
    process = _spawn(
        [sys.executable, "-W", "ignore", "-m", "sender.testing.fake_inbox", "--port", str(port)]
    )
    inbox = FakeInboxProcess(port, process)
    try:
        for _ in range(100):
            try:
                await inbox.stats()
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        yield inbox
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def _body(i: int) -> bytes:
    return orjson.dumps(
        {
            "campaign_id": "bench",
            "contact_id": f"c-{i}",
            "inbox_id": "inbox-1",
            "to": f"+5511{i:09d}",
            "message": {"text": "hi"},
            "variables": {},
        }
    )


async def _rate(inbox: FakeInboxProcess, count: int, run: Callable[[], Awaitable[None]]) -> float:
    before = await inbox.stats()
    await run()
    after = await inbox.stats()
    received = after["received"] - before["received"]
    assert received >= count, (received, count)
    first = after["first_at"] if before["received"] == 0 else before["last_at"]
    return received / (after["last_at"] - first)


async def bare_aiohttp(inbox: FakeInboxProcess, count: int) -> float:
    """A bare aiohttp client loop with CONCURRENCY workers."""
    url = inbox.url_template.replace("{inbox_id}", "inbox-1")

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            await _workers(count, lambda i: _aiohttp_post(session, url, i))

    return await _rate(inbox, count, run)


async def _aiohttp_post(session: aiohttp.ClientSession, url: str, i: int) -> None:
    async with session.post(url, data=_body(i), headers={"Content-Type": "application/json"}) as r:
        await r.read()


async def bare_httpx(inbox: FakeInboxProcess, count: int) -> float:
    """A bare httpx.AsyncClient loop with CONCURRENCY connections."""
    url = inbox.url_template.replace("{inbox_id}", "inbox-1")

    async def run() -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits) as client:
            await _workers(count, lambda i: client.post(url, content=_body(i)))

    return await _rate(inbox, count, run)


async def _workers(count: int, post: Callable[[int], Awaitable[object]]) -> None:
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            await post(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@dataclass
class SenderRun:
    """Contacts per second, each consumer's RSS once ready and at the end, and CPU cost."""

    per_sec: float
    rss_start_mib: list[float]
    rss_end_mib: list[float]
    cpu_us_per_contact: float

    def __str__(self) -> str:
        return (
            f"{self.per_sec:.0f} contacts/s, {self.cpu_us_per_contact:.0f} µs of consumer CPU"
            f" per contact, RSS {self.rss_start_mib} -> {self.rss_end_mib} MiB"
        )


async def ledger_round_trips_per_contact(inbox: FakeInboxProcess, count: int) -> float:
    """PostgreSQL round trips per contact of one consumer, counted on the wire.

    The consumer reaches PostgreSQL through a counting proxy; what it did before the
    first page (migrations, rates) is left out. The proxy costs CPU, so this run's
    throughput is not reported.
    """
    async with RoundTripCounter(DATABASE_URL) as counter:
        counted: dict[str, int] = {}

        def mark(moment: str) -> None:
            counted[moment] = counter.round_trips

        await sender_consumers(inbox, count, database_url=counter.url, on_phase=mark)
    return (counted["end"] - counted["ready"]) / count


async def sender_consumers(
    inbox: FakeInboxProcess,
    count: int,
    processes: int = 1,
    on_phase: Callable[[str], None] = lambda _: None,
    from_csv: bool = False,
    **overrides: object,
) -> SenderRun:
    """`processes` consumer processes draining `count` contacts in pages of 1,000.

    The pages are published straight to the queue, or with `from_csv` by `sender campaign
    start` from a CSV (every contact registered up front, then the pages published).
    `on_phase` hears "ready" before the first page is published and "end" once every
    contact is final.
    """
    token = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        pages_queue=f"bench.{token}.pages",
        inbox_api_url=inbox.url_template,
        inbox_rate_per_sec=1e6,
        inbox_burst=100_000,
        dispatch_concurrency=CONCURRENCY,
        log_level="WARNING",
        **overrides,
    )
    campaign = f"bench-{token}"
    env = settings_env(settings)
    consumers = [
        _spawn([sys.executable, "-m", "sender", "run"], {**env, "METRICS_PORT": str(free_port())})
        for _ in range(processes)
    ]
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    try:
        await _wait_consuming(settings, processes)
        rss_start = [rss_mib(c.pid) for c in consumers]
        cpu_start = sum(cpu_seconds(c.pid) for c in consumers)

        async def run() -> None:
            on_phase("ready")
            if from_csv:
                await asyncio.to_thread(_start_from_csv, env, campaign, count)
            else:
                await _publish(settings, campaign, count)
            await _wait_final(pool, campaign, count)
            on_phase("end")

        per_sec = await _rate(inbox, count, run)
        cpu_s = sum(cpu_seconds(c.pid) for c in consumers) - cpu_start
        rss_end = [rss_mib(c.pid) for c in consumers]
        return SenderRun(per_sec, rss_start, rss_end, cpu_s / count * 1e6)
    finally:
        for consumer in consumers:
            consumer.send_signal(signal.SIGTERM)
        for consumer in consumers:
            consumer.wait(30)
        await pool.execute("DELETE FROM campaigns WHERE campaign_id = $1", campaign)
        await pool.close()
        await delete_topology(AMQP_URL, settings.pages_queue)


async def _wait_consuming(settings: Settings, consumers: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    try:
        for _ in range(300):
            try:
                queue = await channel.declare_queue(settings.pages_queue, passive=True)
                if queue.declaration_result.consumer_count >= consumers:
                    return
            except Exception:
                channel = await connection.channel()
            await asyncio.sleep(0.1)
        raise TimeoutError("consumers did not start")
    finally:
        await connection.close()


async def _publish(settings: Settings, campaign: str, count: int) -> None:
    import aio_pika

    from sender.adapters.amqp_topology import page_message

    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    for number, start in enumerate(range(0, count, 1000)):
        page = make_page(campaign, min(1000, count - start), page=number, prefix=f"p{number}")
        await channel.default_exchange.publish(
            page_message(orjson.dumps(page)), routing_key=settings.pages_queue
        )
    await connection.close()


def _start_from_csv(env: dict[str, str], campaign: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        contacts = Path(tmp) / "contacts.csv"
        write_csv(contacts, count)
        result = campaign_start(env, campaign, contacts)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)


async def _wait_final(pool: asyncpg.Pool, campaign: str, count: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = await pool.fetchval(
            "SELECT count(*) FROM contacts WHERE campaign_id = $1 AND status IN ('sent','failed')",
            campaign,
        )
        if done >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("contacts not final")


async def main() -> None:
    async with fake_inbox_process() as inbox:
        print("aiohttp", round(await bare_aiohttp(inbox, 20000)))
        print("httpx", round(await bare_httpx(inbox, 5000)))
        print("sender x1:", await sender_consumers(inbox, 30000))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    asyncio.run(main())


async def dramatiq_workers(
    inbox: FakeInboxProcess, count: int, processes: int = 2, threads: int = 8
) -> float:
    """Enqueue `count` messages, then let `dramatiq -p processes -t threads` drain them."""
    queue = f"bench-dramatiq-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "BENCH_DRAMATIQ_QUEUE": queue,
        "BENCH_INBOX_URL": inbox.url_template.replace("{inbox_id}", "inbox-1"),
    }
    await asyncio.to_thread(_enqueue, env, count)
    workers = _spawn(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "tests.benchmarks.dramatiq_worker",
            "-p",
            str(processes),
            "-t",
            str(threads),
        ],
        env,
    )
    try:
        before = await inbox.stats()
        while (await inbox.stats())["received"] - before["received"] < count:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # another process; only its counter tells
        after = await inbox.stats()
        first = after["first_at"] if before["received"] == 0 else before["last_at"]
        return (after["received"] - before["received"]) / (after["last_at"] - first)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(30)
        await _delete_queue(queue)


def _enqueue(env: dict[str, str], count: int) -> None:
    script = (
        "from tests.benchmarks.dramatiq_worker import post_contact\n"
        f"for i in range({count}): post_contact.send(i)\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


async def _delete_queue(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        await channel.queue_delete(name)
    await connection.close()
