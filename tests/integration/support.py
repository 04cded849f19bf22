"""Helpers for integration tests: pages, settings as env, consumer processes, ledger reads."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
from pydantic import SecretStr

from sender.adapters.amqp_topology import declare_topology, page_message
from sender.runtime.consumer_app import ConsumerApp
from sender.settings import Settings

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def make_page(
    campaign_id: str, count: int, *, page: int = 0, inbox_id: str = "inbox-1", prefix: str = "c"
) -> dict[str, Any]:
    """A valid page with `count` contacts named `<prefix>-0000`…"""
    return {
        "campaign_id": campaign_id,
        "page": page,
        "inbox_id": inbox_id,
        "message": {"text": "Hi {{name}}"},
        "contacts": [
            {
                "contact_id": f"{prefix}-{i:04d}",
                "to": f"+55119999{i:05d}",
                "variables": {"name": "A"},
            }
            for i in range(count)
        ],
    }


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `sender` process load exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, frozenset | set):
            text = ",".join(str(v) for v in sorted(value))
        elif isinstance(value, SecretStr):
            text = value.get_secret_value()
        else:
            text = str(value)
        env[name.upper()] = text
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, body: bytes) -> None:
    """Publish a page as publishers must (persistent, JSON, default exchange)."""
    await channel.default_exchange.publish(page_message(body), routing_key=queue)


async def declare(channel: aio_pika.abc.AbstractChannel, settings: Settings) -> None:
    """Declare the queues the consumer would declare."""
    await declare_topology(channel, settings)


@asynccontextmanager
async def running_consumer(settings: Settings) -> AsyncIterator[ConsumerApp]:
    """A consumer in this process (fresh metrics registry), drained on exit."""
    app = ConsumerApp(settings)
    try:
        await app.start()
        yield app
    finally:
        await app.stop()


@dataclass
class ConsumerProcess:
    """A `sender run` subprocess."""

    process: subprocess.Popen[bytes]
    metrics_port: int

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to this process only."""
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:  # noqa: ASYNC109
        """Wait for the process to exit; return its exit code."""
        return await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)

    def stop(self) -> None:
        """Kill it if still running (test cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# `python SENDER_RUN`: the consumer as production runs it.
SENDER_RUN: tuple[str, ...] = ("-m", "sender", "run")


def _spawn_consumer(
    env: dict[str, str], log_path: str, command: Sequence[str]
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, *command], env=env, stdout=log_file, stderr=log_file
        )


async def start_consumer_process(
    settings: Settings, log_path: str, command: Sequence[str] = SENDER_RUN
) -> ConsumerProcess:
    """Start `python -m sender run` (or `python COMMAND`) with `settings` and wait until
    /readyz says ready."""
    port = free_port()
    env = settings_env(settings.model_copy(update={"metrics_port": port}))
    process = _spawn_consumer(env, log_path, command)
    consumer = ConsumerProcess(process, port)
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"consumer exited with {process.returncode}; see {log_path}")
            try:
                response = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if response.status_code == 200:
                    return consumer
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # cross-process: nothing to await but the probe
    consumer.stop()
    raise TimeoutError(f"consumer not ready; see {log_path}")


async def contact_rows(pool: asyncpg.Pool, campaign_id: str) -> dict[str, asyncpg.Record]:
    """Every contact row of a campaign by contact id."""
    rows = await pool.fetch("SELECT * FROM contacts WHERE campaign_id = $1", campaign_id)
    return {row["contact_id"]: row for row in rows}


async def wait_for_final(
    pool: asyncpg.Pool,
    campaign_id: str,
    count: int,
    timeout: float = 30,  # noqa: ASYNC109
) -> dict[str, asyncpg.Record]:
    """Poll the ledger (another process writes it) until `count` contacts are sent/failed."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await contact_rows(pool, campaign_id)
        final = sum(1 for row in rows.values() if row["status"] in ("sent", "failed"))
        if final >= count:
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"{final}/{count} final")
        await asyncio.sleep(0.1)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `sender` CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sender", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
