"""`sender demo`: one campaign end to end on this machine against the fake inbox.

It starts the fake inbox and two consumers in this process, publishes a campaign of a
few thousand contacts (plus a small one to a throttled inbox), pauses and resumes it once,
then runs a third campaign whose inbox goes down for a few seconds (`demo_outage`), and
ends with a summary. It removes the queues and Redis keys it made; the ledger rows
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
from sender.adapters.redis_inbox_health import breaker_key, hold_key
from sender.adapters.redis_rate_backend import limiter_keys
from sender.adapters.redis_status import cache_key
from sender.core.page import Contact
from sender.core.ratelimit import Rate
from sender.runtime.bootstrap import operator_services
from sender.runtime.campaign_control import CampaignControl
from sender.runtime.consumer_app import ConsumerApp
from sender.runtime.demo_outage import (
    BREAKER_SETTINGS,
    OUTAGE_AFTER,
    OUTAGE_PAGE_SIZE,
    OUTAGE_RATE,
    OUTAGE_S,
    Outage,
    Transitions,
    outage_contacts,
)
from sender.settings import Settings
from sender.testing import FakeInbox, Step

MAIN_CONTACTS = 3000
THROTTLED_CONTACTS = 100
THROTTLED_RATE = Rate(25.0, 5)
_MESSAGE = {"text": "Hi {{name}}, 20% off today"}


@dataclass
class DemoSummary:
    """What the demo did, for people (rich) and for its test (`--json`).

    `contacts` through `counts` are about the first two campaigns; the `outage_*`,
    `breaker_*` and `failed_during_outage` fields are about the outage campaign.
    """

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
    outage_campaign: str
    outage_contacts: int
    outage_sent: int
    failed_during_outage: int
    outage_seconds: float
    outage_posts: int
    """POSTs to the inbox while it was down."""
    breaker_opened: int
    breaker_closed: int
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
    def outage_campaign(self) -> str:
        return f"demo-{self.token}-outage"

    @property
    def inbox(self) -> str:
        return f"demo-inbox-{self.token}"

    @property
    def outage_inbox(self) -> str:
        return f"demo-outage-{self.token}"

    @property
    def inboxes(self) -> tuple[str, str, str]:
        return (self.inbox, self.throttled_inbox, self.outage_inbox)

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
            **BREAKER_SETTINGS,
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
            await services.inboxes.set_rate(names.outage_inbox, OUTAGE_RATE)
            yield DemoWorld(services.control, services.ledger)
    finally:
        await pool.execute(
            "DELETE FROM inbox_rates WHERE inbox_id = ANY($1::text[])", list(names.inboxes)
        )
        await redis.delete(*_inbox_keys(names), *map(cache_key, _campaigns(names)))
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
        outage = Outage(inbox, names.outage_inbox)
        settings = demo_settings(base, names, inbox)
        async with demo_world(settings, names) as world, _consumers(settings) as apps:
            progress = _Progress(world.ledger, show, [names.campaign, names.throttled_campaign])
            await _start_campaigns(world.control, names)
            await _pause_and_resume(world.control, progress, names.campaign)
            summaries = await progress.summaries()
            reasons = await world.ledger.failure_reasons(names.campaign)
            retries = _retries(apps)
            before = Transitions.read(apps)
            down = await _outage(world.control, progress, names, outage)
            breaker = Transitions.read(apps).since(before)
            urls = [f"http://127.0.0.1:{app.probes.port}/metrics" for app in apps if app.probes]
    first_two = {names.inbox, names.throttled_inbox}
    requests = [r for r in inbox.requests if r.inbox_id in first_two]
    accepted = {
        r.idempotency_key for r in requests if r.step.action == "respond" and r.step.status < 300
    }
    return DemoSummary(
        campaigns=list(summaries),
        contacts=sum(s.total for s in summaries.values()),
        sent=sum(s.counts["sent"] for s in summaries.values()),
        failed_by_reason=reasons,
        retries_by_attempt=retries,
        seconds=time.monotonic() - started,
        metrics_urls=urls,
        inbox_posts=len(requests),
        inbox_keys_accepted=len(accepted),
        paused_and_resumed=True,
        outage_campaign=down.campaign_id,
        outage_contacts=down.total,
        outage_sent=down.counts["sent"],
        failed_during_outage=down.counts["failed"],
        outage_seconds=round(outage.seconds, 1),
        outage_posts=outage.posts(),
        breaker_opened=breaker.opened,
        breaker_closed=breaker.closed,
        counts={campaign: s.counts for campaign, s in summaries.items()},
    )


async def _pause_and_resume(control: CampaignControl, progress: _Progress, campaign: str) -> None:
    """Pause the main campaign a third of the way in, wait, resume it, let both finish."""
    await progress.until("sending", lambda s: _done(s[campaign]) >= MAIN_CONTACTS // 3)
    await control.pause(campaign)
    await progress.until("paused", lambda s: s[campaign].counts["sending"] == 0)
    await progress.hold("paused: nothing is sent", seconds=1.5)
    await control.resume(campaign)
    await progress.until("resumed", _all_completed)


async def _outage(
    control: CampaignControl, progress: _Progress, names: DemoNames, outage: Outage
) -> CampaignSummary:
    """The outage campaign: its inbox goes down a quarter of the way in, then comes back."""
    campaign = names.outage_campaign
    contacts = outage_contacts()
    await control.start(campaign, names.outage_inbox, _MESSAGE, contacts, OUTAGE_PAGE_SIZE)
    progress.add(campaign)
    await progress.until("outage campaign", lambda s: _done(s[campaign]) >= OUTAGE_AFTER)
    outage.begin()
    await progress.hold("inbox down (503): the breaker holds its contacts", seconds=OUTAGE_S)
    outage.end()
    await progress.until("inbox back: the breaker probes and closes", _all_completed)
    return (await progress.summaries())[campaign]


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
    await control.start(names.campaign, names.inbox, _MESSAGE, main, page_size=250)
    await control.start(names.throttled_campaign, names.throttled_inbox, _MESSAGE, throttled, 50)


class _Progress:
    """Reads the campaigns' counts a few times a second and shows them."""

    REFRESH_S = 0.25
    LIMIT_S = 120.0

    def __init__(self, ledger: OperatorLedger, show: Show, campaigns: list[str]) -> None:
        self._ledger = ledger
        self._campaigns = campaigns
        self._show = show

    def add(self, campaign: str) -> None:
        """Watch one more campaign (started after the others)."""
        self._campaigns.append(campaign)

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


def _campaigns(names: DemoNames) -> tuple[str, str, str]:
    return (names.campaign, names.throttled_campaign, names.outage_campaign)


def _inbox_keys(names: DemoNames) -> list[str]:
    """Every Redis key the demo's inboxes got: token buckets, breakers, holds."""
    keys = []
    for inbox_id in names.inboxes:
        breaker = breaker_key(inbox_id)
        keys += [*limiter_keys(inbox_id), breaker, f"{breaker}:win", f"{breaker}:probe"]
        keys.append(hold_key(inbox_id))
    return keys


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
