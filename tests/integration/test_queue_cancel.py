"""The consumer and its queue: a server-side cancel is noticed, a mismatched queue is named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aio_pika
import orjson

from sender.runtime.consumer_app import ConsumerApp
from sender.settings import Settings
from sender.testing import FakeInbox
from tests.integration.conftest import Names
from tests.integration.support import make_page, publish, run_cli, running_consumer, settings_env

MakeSettings = Callable[..., Settings]


async def _until(condition: Callable[[], bool], within_s: float) -> float:
    """Seconds until `condition` held (aio-pika state: there is no event to await)."""
    started = time.monotonic()
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_consumer_whose_queue_is_deleted_goes_unready_then_subscribes_again(
    make_settings: MakeSettings,
    inbox: FakeInbox,
    channel: aio_pika.abc.AbstractChannel,
    names: Names,
) -> None:
    async with running_consumer(make_settings()) as app:
        assert app.consumer.ready
        await channel.queue_delete(names.queue)
        unready_after = await _until(lambda: not app.consumer.ready, within_s=2)
        await _until(lambda: app.consumer.ready, within_s=20)
        await publish(channel, names.queue, orjson.dumps(make_page(names.campaign, 1)))
        await inbox.wait_for_requests(1)

    assert unready_after < 1.0
    assert [r.contact_id for r in inbox.requests] == ["c-0000"]


async def test_a_queue_that_cannot_be_declared_again_makes_the_watchdog_give_up(
    make_settings: MakeSettings, channel: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    app = ConsumerApp(make_settings(), broker_give_up_s=1.0)
    try:
        await app.start()
        await channel.queue_delete(names.queue)
        # Someone declares a classic queue of that name: our quorum declare can never succeed.
        await channel.declare_queue(names.queue, durable=True)
        async with asyncio.timeout(10):
            await app.gave_up.wait()
        ready = app.consumer.ready
    finally:
        await app.stop()

    assert not ready


async def test_run_with_a_queue_declared_otherwise_names_it_and_exits_2(
    make_settings: MakeSettings, channel: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    await channel.declare_queue(names.queue, durable=True)  # classic, no delivery limit
    env = settings_env(make_settings())

    result = await asyncio.to_thread(run_cli, "run", env=env)

    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"queue {names.queue} exists with other arguments (")
    assert "inequivalent arg" in message  # the broker says which
    assert message.endswith("delete it or set PAGES_QUEUE")
    assert "Traceback" not in result.stderr
    assert "service unavailable" not in result.stderr
