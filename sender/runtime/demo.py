"""`sender demo`: one campaign end to end on this machine against the fake inbox.

It starts the fake inbox and two consumers in this process, publishes a campaign of a
few thousand contacts (plus a small one to a throttled inbox), pauses and resumes it once,
and ends with a summary. It removes the queues and Redis keys it made; the ledger rows
stay so `sender campaign status` and `failures` can be tried on them.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from sender.adapters.amqp_topology import delete_topology
from sender.adapters.migrate import migrate
from sender.adapters.operator_ledger import CampaignSummary, OperatorLedger
from sender.adapters.postgres import connect_pool
from sender.adapters.redis_rate_backend import bucket_key
from sender.adapters.redis_status import cache_key
from sender.core.page import Contact
from sender.core.ratelimit import Rate
from sender.runtime.bootstrap import operator_services
from sender.runtime.campaign_control import CampaignControl
from sender.runtime.consumer_app import ConsumerApp
from sender.settings import Settings
from sender.testing import FakeInbox, Step

MAIN_CONTACTS = 3000
THROTTLED_CONTACTS = 100
THROTTLED_RATE = Rate(25.0, 5)


@dataclass
class DemoSummary:
    """What the demo did, for people (rich) and for its test (`--json`)."""

    campaigns: list[str]
    contacts: int
    sent: int
    failed_by_reason: dict[str, int]
    retries_by_attempt: dict[str, int]
    seconds: float
    metrics_urls: list[str]
    inbox_posts: int
    inbox_keys_accepted: int
    paused_and_resumed: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoNames:
    """Unique names for one demo run."""

    token: str

    @property
    def campaign(self) -> str:
        return f"demo-{self.token}"

    @property
    def throttled_campaign(self) -> str:
        return f"demo-{self.token}-throttled"

    @property
    def inbox(self) -> str:
        return f"demo-inbox-{self.token}"

    @property
    def throttled_inbox(self) -> str:
        return f"demo-throttled-{self.token}"

    @property
    def queue(self) -> str:
        return f"demo.{self.token}.pages"


def script_inbox(inbox: FakeInbox, names: DemoNames) -> None:
    """Retries, a 400, an always-503, slow answers and a 429-with-Retry-After inbox."""
    inbox.set_inbox_default(names.inbox, Step(200, delay_s=0.002))
    for i in range(0, MAIN_CONTACTS, 40):
        inbox.script(f"c-{i:05d}", Step(503), Step(200))  # transient: sent on retry
    for i in range(7, MAIN_CONTACTS, 500):
        # Always 503 (even after the pause gives it a fresh retry budget): exhausted.
        inbox.script(f"c-{i:05d}", *[Step(503)] * 20)
    for i in range(13, MAIN_CONTACTS, 150):
        inbox.script(f"c-{i:05d}", Step(200, delay_s=0.8))  # slow inbox answers
    inbox.script("c-00021", Step(400))  # permanent: fails at once
    inbox.set_inbox_default(names.throttled_inbox, Step(200))
    for i in range(0, THROTTLED_CONTACTS, 10):
        inbox.script(f"t-{i:04d}", Step(429, retry_after="1"), Step(200))


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", preferred))
        except OSError:
            return 0
    return preferred


def demo_settings(base: Settings, names: DemoNames, inbox: FakeInbox) -> Settings:
    """The operator's settings with the demo's queue, fake inbox and brisk timings."""
    return base.model_copy(
        update={
            "pages_queue": names.queue,
            "inbox_api_url": inbox.url_template,
            "inbox_api_token": None,
            "dispatch_backoff_base_ms": 200,
            "dispatch_backoff_cap_ms": 2000,
            "dispatch_retry_count": 3,
            "inbox_rate_per_sec": 2000.0,
            "inbox_burst": 200,
            "abort_poll_ms": 200,
            "page_deadline_s": 60.0,
            "metrics_port": _free_port(base.metrics_port),
        }
    )


@dataclass(frozen=True)
class DemoWorld:
    """What the demo drives: the control service and the ledger it reads progress from."""

    control: CampaignControl
    ledger: OperatorLedger


@asynccontextmanager
async def demo_world(settings: Settings, names: DemoNames) -> AsyncIterator[DemoWorld]:
    """Ledger, Redis and a publisher for the demo; removes the demo's queues and keys after."""
    pool = await connect_pool(settings.database_url, max_size=4)
    redis = aioredis.from_url(settings.redis_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        async with operator_services(settings, pool=pool, redis=redis) as services:
            await services.inboxes.set_rate(names.throttled_inbox, THROTTLED_RATE)
            yield DemoWorld(services.control, services.ledger)
    finally:
        await pool.execute("DELETE FROM inbox_rates WHERE inbox_id = $1", names.throttled_inbox)
        await redis.delete(
            bucket_key(names.inbox),
            bucket_key(names.throttled_inbox),
            cache_key(names.campaign),
            cache_key(names.throttled_campaign),
        )
        await redis.aclose()
        await pool.close()
        await delete_topology(settings.amqp_url, settings.pages_queue)


Show = Callable[[str, dict[str, CampaignSummary]], None]


async def run_demo(base: Settings, show: Show) -> DemoSummary:
    """Run the whole demo; `show(phase, summaries)` is called as it goes."""
    names = DemoNames(uuid.uuid4().hex[:8])
    started = time.monotonic()
    async with FakeInbox() as inbox:
        script_inbox(inbox, names)
        settings = demo_settings(base, names, inbox)
        async with demo_world(settings, names) as world, _consumers(settings) as apps:
            progress = _Progress(world.ledger, names, show)
            await _start_campaigns(world.control, names)
            await progress.until(
                "sending", lambda s: _done(s[names.campaign]) >= MAIN_CONTACTS // 3
            )
            await world.control.pause(names.campaign)
            await progress.until("paused", lambda s: s[names.campaign].counts["sending"] == 0)
            await progress.hold("paused: nothing is sent", seconds=1.5)
            await world.control.resume(names.campaign)
            await progress.until("resumed", _all_completed)
            summaries = await progress.summaries()
            reasons = await world.ledger.failure_reasons(names.campaign)
            retries = _retries(apps)
            urls = [f"http://127.0.0.1:{app.probes.port}/metrics" for app in apps if app.probes]
    accepted = {
        r.idempotency_key
        for r in inbox.requests
        if r.step.action == "respond" and r.step.status < 300
    }
    return DemoSummary(
        campaigns=list(summaries),
        contacts=sum(s.total for s in summaries.values()),
        sent=sum(s.counts["sent"] for s in summaries.values()),
        failed_by_reason=reasons,
        retries_by_attempt=retries,
        seconds=time.monotonic() - started,
        metrics_urls=urls,
        inbox_posts=len(inbox.requests),
        inbox_keys_accepted=len(accepted),
        paused_and_resumed=True,
        counts={campaign: s.counts for campaign, s in summaries.items()},
    )


@asynccontextmanager
async def _consumers(settings: Settings) -> AsyncIterator[list[ConsumerApp]]:
    """Two consumers, as two pods would run; only the first takes METRICS_PORT."""
    second = settings.model_copy(update={"metrics_port": 0})
    # The first consumer migrates the ledger (and says if autovacuum is off); once is enough.
    apps = [ConsumerApp(settings), ConsumerApp(second, prepare_database=False)]
    try:
        for app in apps:
            await app.start()
        for app in apps:
            await app.listening.wait()
        yield apps
    finally:
        for app in apps:
            await app.stop()


async def _start_campaigns(control: CampaignControl, names: DemoNames) -> None:
    main = [
        Contact(contact_id=f"c-{i:05d}", to=f"+5511{i:09d}", variables={"name": f"Friend {i}"})
        for i in range(MAIN_CONTACTS)
    ]
    throttled = [
        Contact(contact_id=f"t-{i:04d}", to=f"+5521{i:09d}") for i in range(THROTTLED_CONTACTS)
    ]
    message = {"text": "Hi {{name}}, 20% off today"}
    await control.start(names.campaign, names.inbox, message, main, page_size=250)
    await control.start(names.throttled_campaign, names.throttled_inbox, message, throttled, 50)


class _Progress:
    """Reads both campaigns' counts a few times a second and shows them."""

    REFRESH_S = 0.25
    LIMIT_S = 120.0

    def __init__(self, ledger: OperatorLedger, names: DemoNames, show: Show) -> None:
        self._ledger = ledger
        self._campaigns = (names.campaign, names.throttled_campaign)
        self._show = show

    async def summaries(self) -> dict[str, CampaignSummary]:
        found = {c: await self._ledger.summary(c) for c in self._campaigns}
        return {c: s for c, s in found.items() if s is not None}

    async def until(self, phase: str, done: Callable[[dict[str, CampaignSummary]], bool]) -> None:
        async with asyncio.timeout(self.LIMIT_S):
            while True:
                summaries = await self.summaries()
                self._show(phase, summaries)
                if len(summaries) == len(self._campaigns) and done(summaries):
                    return
                await asyncio.sleep(self.REFRESH_S)

    async def hold(self, phase: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        await self.until(phase, lambda _: time.monotonic() >= deadline)


def _done(summary: CampaignSummary) -> int:
    return summary.counts["sent"] + summary.counts["failed"]


def _all_completed(summaries: dict[str, CampaignSummary]) -> bool:
    return all(s.status == "completed" for s in summaries.values())


def _retries(apps: list[ConsumerApp]) -> dict[str, int]:
    by_attempt: Counter[str] = Counter()
    for app in apps:
        for metric in app.metrics.registry.collect():
            if metric.name != "sender_dispatch_retries":
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    by_attempt[sample.labels["attempt"]] += int(sample.value)
    return dict(sorted(by_attempt.items()))
