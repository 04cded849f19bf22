"""Tests of the fake inbox HTTP server (real sockets on 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sender.testing import FakeInbox, RecordedRequest, Step

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def inbox() -> AsyncIterator[FakeInbox]:
    async with FakeInbox() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _body(contact_id: str, inbox_id: str = "in-1") -> dict[str, Any]:
    return {
        "campaign_id": "camp-1",
        "contact_id": contact_id,
        "inbox_id": inbox_id,
        "to": f"{contact_id}@example.test",
        "message": "hello {name}",
        "variables": {"name": "Ada"},
    }


async def _post(
    client: aiohttp.ClientSession,
    inbox: FakeInbox,
    contact_id: str,
    *,
    inbox_id: str = "in-1",
    headers: dict[str, str] | None = None,
    client_timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    url = inbox.url_template.format(inbox_id=inbox_id)
    all_headers = {"Idempotency-Key": f"camp-1:{contact_id}", **(headers or {})}
    async with client.post(
        url,
        json=_body(contact_id, inbox_id),
        headers=all_headers,
        timeout=aiohttp.ClientTimeout(total=client_timeout),
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_url_template_keeps_inbox_placeholder(inbox: FakeInbox) -> None:
    assert inbox.port > 0
    assert inbox.url_template == f"http://127.0.0.1:{inbox.port}/inboxes/{{inbox_id}}/messages"


async def test_default_answer_is_200_json(inbox: FakeInbox, client: aiohttp.ClientSession) -> None:
    status, headers, body = await _post(client, inbox, "c1")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body.startswith(b"{")


async def test_scripted_statuses_in_order_then_default(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    inbox.script("c1", Step(status=500), Step(status=429), Step(status=201))
    statuses = [(await _post(client, inbox, "c1"))[0] for _ in range(5)]
    assert statuses == [500, 429, 201, 200, 200]
    assert (await _post(client, inbox, "other"))[0] == 200


async def test_script_applies_only_to_its_contact(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    inbox.script("c1", Step(status=503))
    assert (await _post(client, inbox, "c2"))[0] == 200
    assert (await _post(client, inbox, "c1"))[0] == 503


async def test_global_default_step() -> None:
    async with FakeInbox(default=Step(status=502)) as inbox, aiohttp.ClientSession() as client:
        assert (await _post(client, inbox, "c1"))[0] == 502


async def test_retry_after_header(inbox: FakeInbox, client: aiohttp.ClientSession) -> None:
    inbox.script("c1", Step(status=429, retry_after="7"), Step(status=503))
    status, headers, _ = await _post(client, inbox, "c1")
    assert (status, headers.get("Retry-After")) == (429, "7")
    status, headers, _ = await _post(client, inbox, "c1")
    assert status == 503
    assert "Retry-After" not in headers


async def test_delay_adds_latency(inbox: FakeInbox, client: aiohttp.ClientSession) -> None:
    inbox.script("c1", Step(delay_s=0.3))
    started = time.monotonic()
    status, _, _ = await _post(client, inbox, "c1")
    elapsed = time.monotonic() - started
    assert status == 200
    assert 0.28 <= elapsed < 1.5


async def test_reset_gives_client_connection_error(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    inbox.script("c1", Step(action="reset"))
    with pytest.raises(aiohttp.ClientConnectionError):
        await _post(client, inbox, "c1")
    assert len(inbox.requests_for("c1")) == 1
    assert (await _post(client, inbox, "c1"))[0] == 200  # server still healthy


async def test_hang_never_answers_and_stop_is_prompt(client: aiohttp.ClientSession) -> None:
    inbox = FakeInbox()
    await inbox.start()
    try:
        inbox.script("c1", Step(action="hang"))
        with pytest.raises(TimeoutError):
            await _post(client, inbox, "c1", client_timeout=0.3)
        inbox.script("c2", Step(action="hang"))
        pending = asyncio.create_task(_post(client, inbox, "c2", client_timeout=10))
        await inbox.wait_for_requests(2, timeout=5)
    finally:
        started = time.monotonic()
        await inbox.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending


async def test_drip_sends_headers_then_body_slowly(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    inbox.script("c1", Step(action="drip", retry_after="1"))
    url = inbox.url_template.format(inbox_id="in-1")
    async with client.post(url, json=_body("c1")) as resp:
        assert resp.status == 200
        assert resp.headers["Retry-After"] == "1"
        assert resp.content_length == 120
        first = await asyncio.wait_for(resp.content.read(1), timeout=2)
        assert len(first) == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.content.readexactly(10), timeout=1.0)


async def test_stop_releases_drip_and_delay_promptly(client: aiohttp.ClientSession) -> None:
    inbox = FakeInbox()
    await inbox.start()
    inbox.script("c1", Step(action="drip"))
    inbox.script("c2", Step(delay_s=30))
    tasks = [asyncio.create_task(_post(client, inbox, c, client_timeout=20)) for c in ("c1", "c2")]
    await inbox.wait_for_requests(2, timeout=5)
    started = time.monotonic()
    await inbox.stop()
    assert time.monotonic() - started < 2.0
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, aiohttp.ClientError) for r in results), results


async def test_records_carry_headers_path_and_body(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    before = time.monotonic()
    inbox.script("c1", Step(status=500))
    await _post(client, inbox, "c1", inbox_id="in-9", headers={"Authorization": "Bearer tok"})
    await _post(client, inbox, "c2", inbox_id="in-9")
    await _post(client, inbox, "c1", inbox_id="in-9")
    assert [r.contact_id for r in inbox.requests] == ["c1", "c2", "c1"]
    first: RecordedRequest = inbox.requests[0]
    assert first.inbox_id == "in-9"
    assert first.idempotency_key == "camp-1:c1"
    assert first.authorization == "Bearer tok"
    assert first.body == _body("c1", "in-9")
    assert first.step == Step(status=500)
    assert before <= first.received_at <= time.monotonic()
    assert inbox.requests[1].authorization is None
    assert [r.step.status for r in inbox.requests_for("c1")] == [500, 200]
    assert inbox.keys() == {"camp-1:c1": 2, "camp-1:c2": 1}


async def test_non_json_body_is_recorded_empty(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    url = inbox.url_template.format(inbox_id="in-1")
    async with client.post(url, data=b"not json") as resp:
        assert resp.status == 200
    (record,) = inbox.requests
    assert (record.contact_id, record.body, record.idempotency_key) == ("", {}, None)


async def test_wait_for_requests_returns_when_reached(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    waiter = asyncio.create_task(inbox.wait_for_requests(3, timeout=5))
    await asyncio.sleep(0)
    assert not waiter.done()
    for contact in ("a", "b", "c"):
        await _post(client, inbox, contact)
    await asyncio.wait_for(waiter, timeout=1)
    await inbox.wait_for_requests(2, timeout=0.01)  # already reached


async def test_wait_for_requests_times_out(inbox: FakeInbox, client: aiohttp.ClientSession) -> None:
    await _post(client, inbox, "a")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await inbox.wait_for_requests(2, timeout=0.2)
    assert time.monotonic() - started < 1.0


async def test_set_inbox_default(inbox: FakeInbox, client: aiohttp.ClientSession) -> None:
    inbox.set_inbox_default("slow-inbox", Step(status=503, retry_after="2"))
    inbox.script("c1", Step(status=201))
    assert (await _post(client, inbox, "c1", inbox_id="slow-inbox"))[0] == 201
    status, headers, _ = await _post(client, inbox, "c1", inbox_id="slow-inbox")
    assert (status, headers.get("Retry-After")) == (503, "2")
    assert (await _post(client, inbox, "c1", inbox_id="other"))[0] == 200


async def test_reset_forgets_scripts_and_records(
    inbox: FakeInbox, client: aiohttp.ClientSession
) -> None:
    inbox.script("c1", Step(status=500), Step(status=500))
    inbox.set_inbox_default("in-2", Step(status=503))
    await _post(client, inbox, "c1")
    inbox.reset()
    assert inbox.requests == []
    assert inbox.keys() == {}
    assert (await _post(client, inbox, "c1"))[0] == 200
    assert (await _post(client, inbox, "c1", inbox_id="in-2"))[0] == 200
    assert len(inbox.requests) == 2


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/nope", 404),
        ("POST", "/inboxes/in-1", 404),
        ("GET", "/", 404),
        ("GET", "/inboxes/in-1/messages", 405),
        ("PUT", "/inboxes/in-1/messages", 405),
    ],
)
async def test_unknown_path_or_method(
    inbox: FakeInbox, client: aiohttp.ClientSession, method: str, path: str, expected: int
) -> None:
    async with client.request(method, f"http://127.0.0.1:{inbox.port}{path}") as resp:
        assert resp.status == expected
        await resp.read()
    assert inbox.requests == []


async def test_port_before_start_and_fixed_port() -> None:
    with pytest.raises(RuntimeError):
        _ = FakeInbox().port
    async with FakeInbox() as first:
        port = first.port
    async with FakeInbox(port=port) as second, aiohttp.ClientSession() as client:
        assert second.port == port
        assert (await _post(client, second, "c1"))[0] == 200
