"""The process's one httpx transport for inbox calls (aiohttp-backed by default).

httpx-aiohttp maps every aiohttp connection error to `httpx.ConnectTimeout`; the
original aiohttp exception stays as `__cause__`, which `InboxDispatcher` reads to tell
TIMEOUT from DISPATCH_ERROR. The aiohttp session sets no timeout of its own: the
dispatcher's deadline bounds every attempt, so no request arms two timers.

Inbox response bodies are read up to `MAX_RESPONSE_BODY_BYTES` (DESIGN §3). A body
that fits is read to its end, so the connection is kept; a longer one is cut there and
its connection closed, since reading the rest only to keep a socket would let the
inbox decide how much we read.
"""

from __future__ import annotations

from functools import lru_cache

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from sender.settings import Settings

# The most of an inbox response body ever read (the rest is discarded, unread).
MAX_RESPONSE_BODY_BYTES = 64 * 1024


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
    streams the body through an async generator on every request, a cost that shows at
    thousands of requests a second (docs/PERFORMANCE.md has the figures). This one
    reuses parsed URLs, reads the small body at once (at most 64 KiB) and maps errors
    exactly as the stock transport does. It sets no timeout: `InboxDispatcher` bounds
    every attempt.
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
                content = await _read_capped(response, MAX_RESPONSE_BODY_BYTES)
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


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to `limit` bytes of the body; past that, stop and close the connection."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:  # the whole body: the connection goes back to the pool
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    response.close()  # more than the cap: drop the rest with the connection
    return b"".join(chunks)[:limit]


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
