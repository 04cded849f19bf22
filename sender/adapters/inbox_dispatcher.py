"""Inbox API calls: one attempt -> `AttemptResult`, over the process's httpx transport.

Error split (what a retry needs):

    asyncio deadline / httpx.TimeoutException / aiohttp timeouts   -> "TIMEOUT"
    any other httpx.TransportError (refused, reset, protocol)     -> "DISPATCH_ERROR"
    an HTTP response                                               -> its status, e.g. "503"

httpx-aiohttp maps every aiohttp connection error to `httpx.ConnectTimeout`, so the
original aiohttp exception (`__cause__`) decides between TIMEOUT and DISPATCH_ERROR.
Every attempt has one deadline, `DISPATCH_TIMEOUT_MS`, kept here.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from urllib.parse import quote

import aiohttp
import httpx
import orjson

from sender.adapters.http_transport import MAX_RESPONSE_BODY_BYTES
from sender.core.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult
from sender.core.ports import InboxRequest
from sender.errors import InvalidId
from sender.settings import INBOX_ID_PLACEHOLDER, Settings

log = logging.getLogger(__name__)


class InboxDispatcher:
    """POSTs one contact to the inbox API URL from settings (never one from the page).

    It sends `httpx.Request`s straight to the transport: `AsyncClient`'s per-request
    layers (auth flow, redirects, cookie jar, URL merging) do nothing this call needs —
    the bearer header is set here, redirects are not followed, cookies are not kept —
    and their cost shows at high rates (docs/PERFORMANCE.md has the figures).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, settings: Settings) -> None:
        self._transport = transport
        self._url_template = settings.inbox_api_url
        self._deadline_s = settings.dispatch_timeout_ms / 1000
        self._timeout = httpx.Timeout(self._deadline_s).as_dict()
        token = settings.inbox_api_token
        self._base_headers = [(b"Content-Type", b"application/json")]
        if token is not None:
            self._base_headers.append(
                (b"Authorization", f"Bearer {token.get_secret_value()}".encode())
            )

    def url_for(self, inbox_id: str) -> httpx.URL:
        """The inbox API URL with the URL-quoted inbox id (parsed once per inbox)."""
        return inbox_url(self._url_template, inbox_id)

    async def send(self, request: InboxRequest) -> AttemptResult:
        """Make one attempt under the overall `DISPATCH_TIMEOUT_MS` deadline."""
        try:
            async with asyncio.timeout(self._deadline_s):
                response = await self._transport.handle_async_request(self._build(request))
                try:
                    if not isinstance(response.stream, httpx.ByteStream):
                        await _discard_body(response, MAX_RESPONSE_BODY_BYTES)
                finally:
                    await response.aclose()
        except TimeoutError:
            return AttemptResult(TIMEOUT)
        except httpx.TransportError as error:
            return AttemptResult(_transport_code(error))
        return AttemptResult.http(response.status_code, response.headers.get("Retry-After"))

    def _build(self, request: InboxRequest) -> httpx.Request:
        """The POST, built from a body stream with every header set here.

        `httpx.Request(content=...)` would derive Host and Content-Length itself, at about
        five times the cost; these are the same headers it would derive.
        """
        url = self.url_for(request.inbox_id)
        body = orjson.dumps(
            {
                "campaign_id": request.campaign_id,
                "contact_id": request.contact_id,
                "inbox_id": request.inbox_id,
                "to": request.to,
                "message": request.message,
                "variables": request.variables,
            }
        )
        headers = [
            (b"Host", url.netloc),
            *self._base_headers,
            (b"Content-Length", str(len(body)).encode()),
            (b"Idempotency-Key", request.idempotency_key.encode()),
        ]
        outgoing = httpx.Request(
            "POST",
            url,
            headers=headers,
            stream=httpx.ByteStream(body),
            extensions={"timeout": self._timeout},
        )
        outgoing.read()  # in memory already: makes `.content` available to the transport
        return outgoing


@lru_cache(maxsize=1024)
def inbox_url(template: str, inbox_id: str) -> httpx.URL:
    """`INBOX_API_URL` for one inbox, which keeps the template's scheme, host and path prefix.

    The id is quoted whole (a `/` or `?` in it cannot start a segment or a query); an id
    that would still leave the prefix (`.` or `..`, which the URL parser resolves, though
    page validation refuses them first) raises `InvalidId`: the page never picks the path.
    """
    quoted = quote(inbox_id, safe="")
    url = httpx.URL(template.replace(INBOX_ID_PLACEHOLDER, quoted))
    if not keeps_prefix(template, url, quoted):
        raise InvalidId("inbox id", inbox_id)
    return url


def keeps_prefix(template: str, url: httpx.URL, quoted_id: str) -> bool:
    """True if `url` has the template's scheme, host, port and path up to `{inbox_id}`,
    followed by the quoted id itself."""
    prefix = httpx.URL(template.split(INBOX_ID_PLACEHOLDER, 1)[0])
    origin = (url.scheme, url.host, url.port) == (prefix.scheme, prefix.host, prefix.port)
    rest = url.raw_path.removeprefix(prefix.raw_path)
    return origin and rest != url.raw_path and rest.startswith(quoted_id.encode())


async def _discard_body(response: httpx.Response, limit: int) -> None:
    """Read a streamed body to its end when it is at most `limit` bytes (keep-alive), else
    stop there: closing an unfinished response closes its connection. Nothing is kept."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen > limit:
            return


def _transport_code(error: httpx.TransportError) -> str:
    cause = error.__cause__
    if cause is not None and isinstance(cause, aiohttp.ClientError | OSError | TimeoutError):
        timed_out = isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError)
        return TIMEOUT if timed_out else DISPATCH_ERROR
    if isinstance(error, httpx.TimeoutException):
        return TIMEOUT
    return DISPATCH_ERROR
