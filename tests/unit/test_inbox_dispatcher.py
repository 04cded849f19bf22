"""Spec of one inbox API call (DESIGN.md §3) over `httpx.MockTransport`: no sockets.

What is sent (URL, headers, body) and how each answer or failure maps to an
`AttemptResult` code: the HTTP status, `TIMEOUT` or `DISPATCH_ERROR`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from pydantic import SecretStr

from sender.adapters.inbox_dispatcher import InboxDispatcher
from sender.core.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult
from sender.core.ports import InboxRequest
from sender.settings import Settings

URL_TEMPLATE = "http://inbox.test:8080/api/inboxes/{inbox_id}/messages"
REQUEST = InboxRequest(
    campaign_id="spring-sale",
    contact_id="c-0001",
    inbox_id="inbox-42",
    to="+5511999990001",
    message={"text": "Hi {{name}}", "buttons": [{"id": 1}]},
    variables={"name": "Ana"},
)

Answer = Callable[[httpx.Request], Any]


class Inbox:
    """A mock inbox: records each request and answers with `answer` (a Response, or raises)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer or (lambda request: httpx.Response(200))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self._answer(request)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, httpx.Response)
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def dispatcher(inbox: Inbox, token: str | None = None, **settings: Any) -> InboxDispatcher:
    config = Settings(
        inbox_api_url=settings.pop("inbox_api_url", URL_TEMPLATE),
        inbox_api_token=SecretStr(token) if token is not None else None,
        **settings,
    )
    return InboxDispatcher(httpx.MockTransport(inbox), config)


async def send(answer: Answer, request: InboxRequest = REQUEST, **settings: Any) -> AttemptResult:
    return await dispatcher(Inbox(answer), **settings).send(request)


def raising(error: BaseException) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error

    return answer


def caused_by(error: httpx.TransportError, cause: BaseException) -> Answer:
    """An httpx error whose `__cause__` is `cause`, as httpx-aiohttp raises them."""

    def answer(request: httpx.Request) -> httpx.Response:
        raise error from cause

    return answer


# --- the request -----------------------------------------------------------------------------


async def test_the_post_goes_to_the_configured_url_with_the_inbox_id_in_its_slot() -> None:
    inbox = Inbox()

    await dispatcher(inbox).send(REQUEST)

    assert inbox.last.method == "POST"
    assert str(inbox.last.url) == "http://inbox.test:8080/api/inboxes/inbox-42/messages"


async def test_the_inbox_id_is_url_quoted() -> None:
    inbox = Inbox()
    request = InboxRequest("spring-sale", "c-0001", "team@acme:eu", "+55", {})

    await dispatcher(inbox).send(request)

    assert inbox.last.url.raw_path == b"/api/inboxes/team%40acme%3Aeu/messages"


@pytest.mark.parametrize(
    "inbox_id", ["evil.example", "x@evil.example", "a/b", "a?b=1", "a#b", "%2e%2e", "h:1"]
)
async def test_an_inbox_id_never_changes_the_scheme_host_or_path_around_it(inbox_id: str) -> None:
    inbox = Inbox()
    request = InboxRequest("spring-sale", "c-0001", inbox_id, "+55", {})

    await dispatcher(inbox).send(request)

    url = inbox.last.url
    assert (url.scheme, url.host, url.port) == ("http", "inbox.test", 8080)
    assert url.raw_path.startswith(b"/api/inboxes/")
    assert url.raw_path.endswith(b"/messages")
    assert url.raw_path.count(b"/") == 4  # the id stays one path segment
    assert url.query == b""
    assert url.fragment == ""


async def test_the_url_comes_from_settings_for_every_inbox() -> None:
    inbox = Inbox()
    send_to = dispatcher(inbox, inbox_api_url="https://api.example.com/v2/{inbox_id}/send")

    await send_to.send(REQUEST)
    await send_to.send(InboxRequest("spring-sale", "c-2", "inbox-7", "+55", {}))

    assert [str(r.url) for r in inbox.requests] == [
        "https://api.example.com/v2/inbox-42/send",
        "https://api.example.com/v2/inbox-7/send",
    ]


async def test_the_body_is_the_contract_json_object() -> None:
    inbox = Inbox()

    await dispatcher(inbox).send(REQUEST)

    assert orjson.loads(inbox.last.content) == {
        "campaign_id": "spring-sale",
        "contact_id": "c-0001",
        "inbox_id": "inbox-42",
        "to": "+5511999990001",
        "message": {"text": "Hi {{name}}", "buttons": [{"id": 1}]},
        "variables": {"name": "Ana"},
    }


async def test_control_characters_in_the_address_are_only_json_escaped_in_the_body() -> None:
    inbox = Inbox()
    request = InboxRequest("spring-sale", "c-0001", "inbox-42", "+55\r\nX-Evil: 1", {})

    await dispatcher(inbox).send(request)

    assert b"\r\n" not in inbox.last.content
    assert "x-evil" not in inbox.last.headers
    assert orjson.loads(inbox.last.content)["to"] == "+55\r\nX-Evil: 1"


async def test_the_headers_are_content_type_idempotency_key_host_and_length() -> None:
    inbox = Inbox()

    await dispatcher(inbox).send(REQUEST)

    headers = inbox.last.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "spring-sale:c-0001"
    assert headers["Host"] == "inbox.test:8080"
    assert headers["Content-Length"] == str(len(inbox.last.content))
    assert "Authorization" not in headers


async def test_the_host_header_omits_a_default_port() -> None:
    inbox = Inbox()

    await dispatcher(inbox, inbox_api_url="http://inbox.test/{inbox_id}").send(REQUEST)

    assert inbox.last.headers["Host"] == "inbox.test"


async def test_a_configured_token_is_sent_as_a_bearer_authorization() -> None:
    inbox = Inbox()

    await dispatcher(inbox, token="s3cr3t-token").send(REQUEST)

    assert inbox.last.headers["Authorization"] == "Bearer s3cr3t-token"


async def test_every_attempt_of_a_contact_carries_the_same_idempotency_key() -> None:
    inbox = Inbox(lambda request: httpx.Response(503))
    send_to = dispatcher(inbox)

    for _ in range(3):
        await send_to.send(REQUEST)

    assert {r.headers["Idempotency-Key"] for r in inbox.requests} == {"spring-sale:c-0001"}


# --- the answer ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_a_2xx_is_its_status(status: int) -> None:
    result = await send(lambda request: httpx.Response(status))

    assert result == AttemptResult.http(status)
    assert result.result_class == "2xx"


@pytest.mark.parametrize(
    ("status", "result_class"),
    [(400, "4xx"), (404, "4xx"), (409, "4xx"), (500, "5xx"), (502, "5xx"), (503, "5xx")],
)
async def test_a_4xx_or_5xx_is_its_status(status: int, result_class: str) -> None:
    result = await send(lambda request: httpx.Response(status))

    assert result == AttemptResult(code=str(status), status=status)
    assert result.result_class == result_class


async def test_a_redirect_is_not_followed_and_counts_as_an_error_status() -> None:
    inbox = Inbox(lambda request: httpx.Response(302, headers={"Location": "http://elsewhere/"}))

    result = await dispatcher(inbox).send(REQUEST)

    assert result == AttemptResult.http(302)
    assert result.result_class == "error"
    assert len(inbox.requests) == 1


@pytest.mark.parametrize("retry_after", ["7", "Wed, 01 May 2024 12:00:10 GMT"])
async def test_retry_after_is_captured_as_sent(retry_after: str) -> None:
    result = await send(lambda request: httpx.Response(429, headers={"Retry-After": retry_after}))

    assert result == AttemptResult.http(429, retry_after=retry_after)


async def test_no_retry_after_is_none() -> None:
    result = await send(lambda request: httpx.Response(503))

    assert result.retry_after is None


async def test_a_body_still_streaming_is_read_to_the_end() -> None:
    chunks_read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"{", b"}"):
            chunks_read.append(chunk)
            yield chunk

    result = await send(lambda request: httpx.Response(200, content=body()))

    assert result == AttemptResult.http(200)
    assert chunks_read == [b"{", b"}"]


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout("read"), httpx.ConnectTimeout("connect"), httpx.PoolTimeout("pool")]
)
async def test_an_httpx_timeout_is_timeout(error: httpx.TransportError) -> None:
    assert await send(raising(error)) == AttemptResult(TIMEOUT)


async def test_an_answer_slower_than_the_attempt_deadline_is_timeout() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    result = await send(never, dispatch_timeout_ms=20)

    assert result == AttemptResult(TIMEOUT)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadError("reset"), httpx.RemoteProtocolError("junk")],
)
async def test_a_connection_or_protocol_failure_is_dispatch_error(
    error: httpx.TransportError,
) -> None:
    result = await send(raising(error))

    assert result == AttemptResult(DISPATCH_ERROR)
    assert result.result_class == "error"


@pytest.mark.parametrize(
    ("cause", "code"),
    [
        (aiohttp.ServerDisconnectedError(), DISPATCH_ERROR),
        (aiohttp.ClientConnectionError("refused"), DISPATCH_ERROR),
        (aiohttp.ClientPayloadError("truncated"), DISPATCH_ERROR),
        (ConnectionRefusedError(111, "Connection refused"), DISPATCH_ERROR),
        (ConnectionResetError(104, "Connection reset by peer"), DISPATCH_ERROR),
        (aiohttp.ServerTimeoutError("read timeout"), TIMEOUT),
        (TimeoutError(), TIMEOUT),
    ],
)
async def test_an_aiohttp_failure_mapped_to_connect_timeout_is_told_apart_by_its_cause(
    cause: BaseException, code: str
) -> None:
    # httpx-aiohttp raises every aiohttp connection error as httpx.ConnectTimeout.
    result = await send(caused_by(httpx.ConnectTimeout("mapped"), cause))

    assert result == AttemptResult(code)


async def test_an_httpx_error_with_an_unrelated_cause_keeps_its_own_meaning() -> None:
    result = await send(caused_by(httpx.ConnectError("refused"), ValueError("not a transport")))

    assert result == AttemptResult(DISPATCH_ERROR)
