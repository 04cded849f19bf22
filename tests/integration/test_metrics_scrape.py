"""The metrics the alerts and the dashboard use are on a running consumer's /metrics."""

from __future__ import annotations

import json
import re

import httpx
import orjson
import yaml

from sender.testing import Step
from tests.deploy.support import DEPLOY, dashboard_exprs
from tests.integration.conftest import World
from tests.integration.support import make_page, publish, running_consumer

_NAME = re.compile(r"\bsender_[a-z0-9_]+\b")


def _names_used() -> set[str]:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exprs = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "sender.json").read_text())
    exprs += dashboard_exprs(dashboard)
    return {name for expr in exprs for name in _NAME.findall(expr)}


async def test_every_metric_in_alerts_and_dashboard_is_scraped_from_a_live_consumer(
    world: World,
) -> None:
    world.inbox.script("c-0000", Step(400))
    world.inbox.script("c-0001", Step(503), Step(200))
    world.inbox.script("c-0002", Step(503), Step(503))
    settings = world.settings(dispatch_retry_count=1, dispatch_backoff_base_ms=10)
    async with running_consumer(settings) as app:
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 4))
        )
        await publish(world.channel, world.names.queue, b"not json")
        await app.wait_settled(2)
        assert app.probes is not None
        async with httpx.AsyncClient() as client:
            scraped = (await client.get(f"http://127.0.0.1:{app.probes.port}/metrics")).text

    exposed = set(re.findall(r"^(sender_\w+)[{ ]", scraped, flags=re.MULTILINE))
    used = _names_used()
    assert used
    assert used <= exposed, sorted(used - exposed)
