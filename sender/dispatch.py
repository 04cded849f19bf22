"""Inbox API calls: the process's one httpx transport, and one attempt -> `AttemptResult`.

Error split (what a retry needs):

    asyncio deadline / httpx.TimeoutException / aiohttp timeouts   -> "TIMEOUT"
    any other httpx.TransportError (refused, reset, protocol)     -> "DISPATCH_ERROR"
    an HTTP response                                               -> its status, e.g. "503"

httpx-aiohttp maps every aiohttp connection error to `httpx.ConnectTimeout`, so the
original aiohttp exception (`__cause__`) decides between TIMEOUT and DISPATCH_ERROR.

Every attempt has one deadline, `DISPATCH_TIMEOUT_MS`, kept by `InboxDispatcher`; the
aiohttp session sets none of its own, so no request arms two timers.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from urllib.parse import quote

import aiohttp
import httpx
import orjson
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from sender.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult
from sender.ports import InboxRequest
from sender.settings import Settings

log = logging.getLogger(__name__)


def build_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The process's one HTTP transport: pool sized to `DISPATCH_CONCURRENCY`, no retries."""
    if settings.http_transport == "aiohttp":
        return InboxTransport(client=lambda: _aiohttp_session(settings))
    limits = httpx.Limits(
        max_connections=settings.dispatch_concurrency,
        max_keepalive_connections=settings.dispatch_concurrency,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


def _aiohttp_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.dispatch_concurrency, limit_per_host=0, keepalive_timeout=30.0
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # the dispatcher's deadline bounds each attempt
    )


class InboxTransport(AiohttpTransport):
    """httpx-aiohttp's transport with a lean request path for small JSON POSTs.

    The stock `handle_async_request` re-parses the URL, builds a `ClientTimeout` and
    streams the body through an async generator on every request; at thousands of
    requests a second that was a tenth of a consumer's CPU (docs/PERFORMANCE.md). This
    one reuses parsed URLs, reads the small body at once and maps errors exactly as the
    stock transport does. It sets no timeout: `InboxDispatcher` bounds every attempt.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return the response with its body read."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        try:
            async with self.client.request(
                request.method,
                _aiohttp_url(str(request.url)),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, OSError) as error:
            raise _as_transport_error(error) from error
        # A body already in memory, handed over as a stream: `content=` would run it
        # through httpx's decoders again, for a body the dispatcher never reads.
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=httpx.ByteStream(content),
            request=request,
        )


def _as_transport_error(error: Exception) -> httpx.TransportError:
    """httpx-aiohttp's mapping of an aiohttp error; what it leaves unmapped (an answer that
    is not HTTP, say) is a `RemoteProtocolError`, so it never escapes as an aiohttp type."""
    try:
        with map_aiohttp_exceptions():
            raise error
    except httpx.TransportError as mapped:
        return mapped
    except Exception:  # unmapped: the mapper re-raised it as it was
        return httpx.RemoteProtocolError(str(error))


@lru_cache(maxsize=1024)
def _aiohttp_url(url: str) -> yarl.URL:
    return yarl.URL(url, encoded=True)


class InboxDispatcher:
    """POSTs one contact to the inbox API URL from settings (never one from the page).

    It sends `httpx.Request`s straight to the transport: `AsyncClient`'s per-request
    layers (auth flow, redirects, cookie jar, URL merging) do nothing this call needs —
    the bearer header is set here, redirects are not followed, cookies are not kept —
    and cost about a fifth of a consumer's CPU at 1,500 requests/s.
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
        return _inbox_url(self._url_template, inbox_id)

    async def send(self, request: InboxRequest) -> AttemptResult:
        """Make one attempt under the overall `DISPATCH_TIMEOUT_MS` deadline."""
        try:
            async with asyncio.timeout(self._deadline_s):
                response = await self._transport.handle_async_request(self._build(request))
                try:
                    if not isinstance(response.stream, httpx.ByteStream):
                        await response.aread()  # drain a body still on the wire: keep-alive
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
def _inbox_url(template: str, inbox_id: str) -> httpx.URL:
    return httpx.URL(template.replace("{inbox_id}", quote(inbox_id, safe="")))


def _transport_code(error: httpx.TransportError) -> str:
    cause = error.__cause__
    if cause is not None and isinstance(cause, aiohttp.ClientError | OSError | TimeoutError):
        timed_out = isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError)
        return TIMEOUT if timed_out else DISPATCH_ERROR
    if isinstance(error, httpx.TimeoutException):
        return TIMEOUT
    return DISPATCH_ERROR
