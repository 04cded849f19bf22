"""Abort latency: from `pause` returning to the last attempt any consumer starts.

Shared by the integration test (20 trials, asserts p99 < 250 ms) and `make bench`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aio_pika
import orjson

from sender.runtime.campaign_control import CampaignControl
from sender.testing import FakeInbox
from tests.integration.support import make_page, publish


@dataclass(frozen=True)
class PauseLatency:
    """Seconds from pause returned to the last attempt seen at the inbox, per trial."""

    trials: list[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.trials)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure_pause_latency(
    control: CampaignControl,
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    inbox: FakeInbox,
    campaign_prefix: str,
    trials: int,
    settle_s: float = 0.6,
) -> PauseLatency:
    """Run `trials` campaigns through running consumers and pause each mid-flight."""
    latencies = []
    for trial in range(trials):
        campaign_id = f"{campaign_prefix}-{trial}"
        seen = inbox.received
        for page in range(2):
            body = make_page(campaign_id, 300, page=page, prefix=f"p{page}")
            await publish(channel, queue, orjson.dumps(body))
        await inbox.wait_for_requests(seen + 40, timeout=30)
        await control.pause(campaign_id)
        paused_at = time.monotonic()
        # Watch for attempts that still start: only time can show that none do.
        await asyncio.sleep(settle_s)
        last = max(
            r.received_at for r in inbox.requests if r.body.get("campaign_id") == campaign_id
        )
        latencies.append(max(0.0, last - paused_at))
        await control.stop(campaign_id)
    return PauseLatency(latencies)
