"""Inbox response bodies are read at most 64 KiB (DESIGN §3), on both transports."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from sender.adapters.http_transport import MAX_RESPONSE_BODY_BYTES, build_transport
from sender.adapters.inbox_dispatcher import InboxDispatcher
from sender.core.policy import AttemptResult
from sender.core.ports import InboxRequest
from sender.settings import Settings
from sender.testing import FakeInbox, Step

MakeSettings = Callable[..., Settings]
REQUEST = InboxRequest("spring-sale", "c-1", "inbox-1", "+5511999990001", {"text": "hi"})


async def test_an_endless_body_is_cut_at_64_kib_and_the_attempt_counts_as_sent(
    make_settings: MakeSettings, transport: str, inbox: FakeInbox
) -> None:
    inbox.script("c-1", Step(200, action="flood"), Step(200))
    settings = make_settings(http_transport=transport, dispatch_timeout_ms=3000)
    async with build_transport(settings) as http:
        dispatcher = InboxDispatcher(http, settings)
        started = time.monotonic()
        flooded = await dispatcher.send(REQUEST)
        took_s = time.monotonic() - started
        after = await dispatcher.send(REQUEST)  # a fresh connection works as before

    # Read whole, the body would hold the attempt until its 3 s deadline (TIMEOUT).
    assert flooded == AttemptResult("200", 200)
    assert took_s < 1.0
    assert after == AttemptResult("200", 200)
    # What the server got out before the client stopped: socket buffers, not the stream.
    assert inbox.flood_bytes < 64 * 1024 * 1024


async def test_the_aiohttp_transport_hands_over_at_most_64_kib_of_body(
    make_settings: MakeSettings, inbox: FakeInbox
) -> None:
    inbox.script("c-1", Step(200, action="flood"))
    settings = make_settings(http_transport="aiohttp")
    url = inbox.url_template.replace("{inbox_id}", "inbox-1")
    async with build_transport(settings) as http:
        request = httpx.Request("POST", url, content=b'{"contact_id": "c-1"}')
        response = await http.handle_async_request(request)
        body = await response.aread()

    assert response.status_code == 200
    assert len(body) == MAX_RESPONSE_BODY_BYTES
