"""`make faults`: the long fault runs (many kills, soak), figures into docs/RELIABILITY.md.

Invariants checked in each run (the fast fault tests in `make test` check them too):
I1 every contact ends sent, failed or pending; I2 POSTs per Idempotency-Key beyond the
first stay within what was in flight at the faults; I3 no hot loop; I4 ack after commit.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import orjson

from sender.adapters.amqp_topology import (
    dead_queue_name,
    declare_topology,
    delete_topology,
    page_message,
)
from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.benchmarks.bench_throughput import rss_mib
from tests.integration.support import (
    AMQP_URL,
    DATABASE_URL,
    SENDER_RUN,
    ConsumerProcess,
    make_page,
    start_consumer_process,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
LOGS = Path("/tmp/sender-faults")


@dataclass
class FaultRun:
    """One row of the reliability table."""

    fault: str
    runs: int
    contacts: int
    lost: int
    duplicates: int
    dead: int
    recovery_s: float
    note: str = ""


def _settings(token: str, inbox: FakeInbox, **overrides: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        pages_queue=f"faults.{token}.pages",
        inbox_api_url=inbox.url_template,
        inbox_rate_per_sec=100_000,
        inbox_burst=10_000,
        dispatch_backoff_base_ms=100,
        log_format="json",
        log_level="WARNING",
        **overrides,
    )


async def _publish(settings: Settings, campaign: str, contacts: int, size: int = 1000) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    await declare_topology(channel, settings)
    for number, start in enumerate(range(0, contacts, size)):
        page = make_page(campaign, min(size, contacts - start), page=number, prefix=f"p{number}")
        await channel.default_exchange.publish(
            page_message(orjson.dumps(page)), routing_key=settings.pages_queue
        )
    await connection.close()


async def _final_count(pool: asyncpg.Pool, campaign: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM contacts WHERE campaign_id = $1 AND status IN ('sent','failed')",
            campaign,
        )
    )


async def _wait_all_final(pool: asyncpg.Pool, campaign: str, contacts: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while await _final_count(pool, campaign) < contacts:
        if time.monotonic() > deadline:
            raise TimeoutError("run did not complete")
        await asyncio.sleep(0.25)  # another process writes the ledger


async def _dead_count(settings: Settings) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    queue = await channel.declare_queue(dead_queue_name(settings.pages_queue), passive=True)
    count = int(queue.declaration_result.message_count)
    await connection.close()
    return count


async def _cleanup(settings: Settings, pool: asyncpg.Pool, campaign: str) -> None:
    await pool.execute("DELETE FROM campaigns WHERE campaign_id = $1", campaign)
    await delete_topology(AMQP_URL, settings.pages_queue)


async def sigkill_while_sending(
    kills: int = 20,
    contacts: int = 10_000,
    in_flight: int = 100,
    latency_s: float = 0.02,
    command: Sequence[str] = SENDER_RUN,
) -> FaultRun:
    """One consumer with `in_flight` contacts at once against an inbox answering in
    `latency_s`, SIGKILLed `kills` times while sending, each time once another
    contacts / (kills + 1) POSTs arrived, and restarted: every kill lands mid-stream, so
    duplicates per kill show the writer's unflushed window plus what was in flight.
    `command` runs the consumer (`python COMMAND`)."""
    token = uuid.uuid4().hex[:8]
    campaign = f"faults-dup-{token}"
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    async with FakeInbox(default=Step(200, delay_s=latency_s)) as inbox:
        settings = _settings(
            token,
            inbox,
            dispatch_concurrency=in_flight,
            claim_lease_ms=3000,
            dispatch_timeout_ms=3000,
        )
        consumer = await _start(settings, "dup-0", command)
        try:
            await _publish(settings, campaign, contacts)
            every, killed = contacts // (kills + 1), 0
            while killed < kills and await _final_count(pool, campaign) < contacts:
                try:
                    await inbox.wait_for_requests(inbox.received + every, timeout=30)
                except TimeoutError:
                    if await _final_count(pool, campaign) >= contacts:
                        break  # it finished before this kill
                    raise
                consumer.signal(signal.SIGKILL)
                await consumer.wait_exit(10)
                killed += 1
                consumer = await _start(settings, f"dup-{killed}", command)
            last_kill = time.monotonic()
            await _wait_all_final(pool, campaign, contacts, limit_s=300)
            recovery = time.monotonic() - last_kill
            dead = await _dead_count(settings)
        finally:
            consumer.stop()
        posts = inbox.keys()
    lost = contacts - await _final_count(pool, campaign)
    await _cleanup(settings, pool, campaign)
    await pool.close()
    duplicates = sum(n - 1 for n in posts.values())
    # A kill lands once another 1/(kills + 1) of the contacts was POSTed; a consumer that
    # ran ahead of the count (restarts resend, the inbox shares this loop) can finish first.
    return FaultRun(
        "consumer SIGKILL while sending",
        killed,
        contacts,
        lost,
        duplicates,
        dead,
        recovery,
        f"1 consumer, {in_flight} in flight, inbox {latency_s * 1000:.0f} ms:"
        f" {duplicates / max(killed, 1):.1f} duplicate POSTs per kill",
    )


async def sigkill_storm(kills: int = 20, contacts: int = 10_000) -> FaultRun:
    """Two consumers; one of them SIGKILLed at random moments, `kills` times, and restarted."""
    token = uuid.uuid4().hex[:8]
    campaign = f"faults-kill-{token}"
    rng = random.Random(7)
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    # Slow answers keep the run going while the kills land (about 20 s of sending).
    async with FakeInbox(default=Step(200, delay_s=0.2)) as inbox:
        settings = _settings(
            token, inbox, dispatch_concurrency=50, claim_lease_ms=3000, dispatch_timeout_ms=3000
        )
        consumers = [await _start(settings, f"kill-{i}") for i in range(2)]
        try:
            await _publish(settings, campaign, contacts)
            for kill in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                victim = rng.randrange(len(consumers))
                consumers[victim].signal(signal.SIGKILL)
                await consumers[victim].wait_exit(10)
                consumers[victim] = await _start(settings, f"kill-{victim}-{kill}")
            last_kill = time.monotonic()
            await _wait_all_final(pool, campaign, contacts, limit_s=300)
            recovery = time.monotonic() - last_kill
            dead = await _dead_count(settings)
        finally:
            for consumer in consumers:
                consumer.stop()
        posts = inbox.keys()
    lost = contacts - await _final_count(pool, campaign)
    await _cleanup(settings, pool, campaign)
    await pool.close()
    duplicates = sum(n - 1 for n in posts.values())
    return FaultRun(
        "consumer SIGKILL at random moments",
        kills,
        contacts,
        lost,
        duplicates,
        dead,
        recovery,
        "2 consumers, 50 in flight each; recovery = last kill → all final",
    )


async def soak(contacts: int = 200_000) -> tuple[FaultRun, str]:
    """Two consumers through `contacts` with 1 % of contacts answering 503 once."""
    token = uuid.uuid4().hex[:8]
    campaign = f"faults-soak-{token}"
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
    async with FakeInbox() as inbox:
        for number in range(contacts // 1000):
            for i in range(0, 1000, 100):
                inbox.script(f"p{number}-{i:04d}", Step(503), Step(200))
        settings = _settings(token, inbox)
        consumers = [await _start(settings, f"soak-{i}") for i in range(2)]
        try:
            rss_start = [rss_mib(c.process.pid) for c in consumers]
            gauges_start = [await _gauges(c) for c in consumers]
            started = time.monotonic()
            await _publish(settings, campaign, contacts)
            quarters = await _rss_by_quarter(pool, campaign, contacts, consumers)
            elapsed = time.monotonic() - started
            gauges_end = [await _gauges(c) for c in consumers]
            dead = await _dead_count(settings)
        finally:
            for consumer in consumers:
                consumer.stop()
        posts = inbox.keys()
        inbox.requests.clear()
    lost = contacts - await _final_count(pool, campaign)
    await _cleanup(settings, pool, campaign)
    await pool.close()
    duplicates = sum(n - 1 for n in posts.values()) - contacts // 100  # the scripted retries
    gauges = "; ".join(
        f"consumer {i + 1}: tasks {a['tasks']:.0f} → {b['tasks']:.0f},"
        f" open fds {a['fds']:.0f} → {b['fds']:.0f}"
        for i, (a, b) in enumerate(zip(gauges_start, gauges_end, strict=True))
    )
    memory = ", ".join(
        f"consumer {i + 1}: {a:.0f} → " + " → ".join(f"{q[i]:.0f}" for q in quarters) + " MiB"
        for i, a in enumerate(rss_start)
    )
    row = FaultRun(
        "soak, 1 % of contacts 503 once",
        1,
        contacts,
        lost,
        duplicates,
        dead,
        0.0,
        f"{contacts / elapsed:.0f} contacts/s over {elapsed:.0f} s",
    )
    return row, (
        "The fake inbox runs inside the fault runner and records every request, so these"
        " rates are not throughput figures (see PERFORMANCE.md). Soak RSS (when ready, then"
        f" at 25/50/75/100 % of the contacts final): {memory}."
        f" Idle before and after the soak: {gauges}."
    )


async def _rss_by_quarter(
    pool: asyncpg.Pool, campaign: str, contacts: int, consumers: list[ConsumerProcess]
) -> list[list[float]]:
    """Each consumer's RSS when 25, 50, 75 and 100 % of the contacts are final."""
    quarters: list[list[float]] = []
    for quarter in (1, 2, 3, 4):
        await _wait_all_final(pool, campaign, contacts * quarter // 4, limit_s=900)
        quarters.append([rss_mib(c.process.pid) for c in consumers])
    return quarters


async def _gauges(consumer: ConsumerProcess) -> dict[str, float]:
    """Tasks alive and open file descriptors, from the consumer's own /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{consumer.metrics_port}/metrics")).text
    found = {}
    for key, name in (("tasks", "sender_event_loop_tasks"), ("fds", "process_open_fds")):
        match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, flags=re.MULTILINE)
        found[key] = float(match.group(1)) if match else float("nan")
    return found


async def _start(
    settings: Settings, name: str, command: Sequence[str] = SENDER_RUN
) -> ConsumerProcess:
    await asyncio.to_thread(LOGS.mkdir, exist_ok=True)
    return await start_consumer_process(settings, str(LOGS / f"{name}.log"), command)


def versions() -> str:
    """The versions the figures were measured with."""
    rabbit = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, check=False)
    return (
        f"RabbitMQ {rabbit.stdout.strip() or '?'}, aio-pika {version('aio-pika')}, "
        f"redis-py {version('redis')}, asyncpg {version('asyncpg')},"
        f" Python {sys.version.split()[0]}"
    )


def write(rows: list[FaultRun], notes: list[str]) -> None:
    """Replace the generated section of docs/RELIABILITY.md."""
    begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
    table = [
        begin,
        f"Measured {datetime.date.today().isoformat()} with `make faults`; {versions()}.",
        "",
        "| fault | runs | contacts | lost | duplicate POSTs | dead-lettered | recovery | notes |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r.fault} | {r.runs} | {r.contacts} | {r.lost} | {r.duplicates} | {r.dead}"
            f" | {r.recovery_s:.1f} s | {r.note} |"
            for r in rows
        ),
        "",
        *notes,
        end,
    ]
    text = DOC.read_text()
    text = text[: text.index(begin)] + "\n".join(table) + text[text.index(end) + len(end) :]
    DOC.write_text(text)


async def main() -> None:
    """Run the long fault scenarios and update docs/RELIABILITY.md."""
    kill = await sigkill_storm()
    print(kill)
    while_sending = await sigkill_while_sending()
    print(while_sending)
    soak_row, memory = await soak()
    print(soak_row, memory)
    write([kill, while_sending, soak_row], [memory])


if __name__ == "__main__":
    if sys.argv[1:] == ["while-sending"]:  # that run alone, printed (issue 15's figure)
        print(asyncio.run(sigkill_while_sending()))
    else:
        asyncio.run(main())
