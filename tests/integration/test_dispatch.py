"""One attempt against real sockets, on both transports: the error-code split of DESIGN §3."""

from __future__ import annotations

from collections.abc import Callable

from sender.adapters.http_transport import build_transport
from sender.adapters.inbox_dispatcher import InboxDispatcher
from sender.core.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult
from sender.core.ports import InboxRequest
from sender.settings import Settings
from sender.testing import FakeInbox, Step
from tests.integration.support import free_port

MakeSettings = Callable[..., Settings]
REQUEST = InboxRequest("spring-sale", "c-1", "inbox/42 ü", "+5511999990001", {"text": "hi"})


async def _attempt(settings: Settings) -> AttemptResult:
    async with build_transport(settings) as transport:
        return await InboxDispatcher(transport, settings).send(REQUEST)


async def test_connection_refused_is_dispatch_error(
    make_settings: MakeSettings, transport: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}/inboxes/{{inbox_id}}/messages"
    result = await _attempt(make_settings(http_transport=transport, inbox_api_url=url))
    assert result == AttemptResult(DISPATCH_ERROR)


async def test_a_server_that_drips_its_answer_hits_the_overall_deadline(
    make_settings: MakeSettings, transport: str, inbox: FakeInbox
) -> None:
    inbox.script("c-1", Step(action="drip"))
    result = await _attempt(make_settings(http_transport=transport, dispatch_timeout_ms=700))
    assert result == AttemptResult(TIMEOUT)


async def test_an_answer_that_is_not_http_is_dispatch_error(
    make_settings: MakeSettings, transport: str, inbox: FakeInbox
) -> None:
    inbox.script("c-1", Step(action="garbage"))
    result = await _attempt(make_settings(http_transport=transport))
    assert result == AttemptResult(DISPATCH_ERROR)


async def test_request_carries_quoted_inbox_key_token_and_body(
    make_settings: MakeSettings, transport: str, inbox: FakeInbox
) -> None:
    inbox.script("c-1", Step(503, retry_after="7"))
    settings = make_settings(http_transport=transport, inbox_api_token="s3cret")
    result = await _attempt(settings)

    assert result == AttemptResult("503", 503, "7")
    (request,) = inbox.requests
    assert request.inbox_id == "inbox/42 ü"
    assert request.idempotency_key == "spring-sale:c-1"
    assert request.authorization == "Bearer s3cret"
    assert request.body == {
        "campaign_id": "spring-sale",
        "contact_id": "c-1",
        "inbox_id": "inbox/42 ü",
        "to": "+5511999990001",
        "message": {"text": "hi"},
        "variables": {},
    }
