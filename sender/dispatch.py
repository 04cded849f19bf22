"""Inbox API calls: the process's one httpx client, and one attempt -> `AttemptResult`.

Error split (what a retry needs):

    asyncio deadline / httpx.TimeoutException / aiohttp timeouts   -> "TIMEOUT"
    any other httpx.TransportError (refused, reset, protocol)     -> "DISPATCH_ERROR"
    an HTTP response                                               -> its status, e.g. "503"

httpx-aiohttp maps every aiohttp connection error to `httpx.ConnectTimeout`, so the
original aiohttp exception (`__cause__`) decides between TIMEOUT and DISPATCH_ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from sender.policy import DISPATCH_ERROR, TIMEOUT, AttemptResult
from sender.ports import InboxRequest
from sender.settings import Settings

log = logging.getLogger(__name__)


def build_client(settings: Settings) -> httpx.AsyncClient:
    """One client per process: pool sized to `DISPATCH_CONCURRENCY`, no transport retries."""
    timeout = httpx.Timeout(settings.dispatch_timeout_ms / 1000)
    limits = httpx.Limits(
        max_connections=settings.dispatch_concurrency,
        max_keepalive_connections=settings.dispatch_concurrency,
        keepalive_expiry=30.0,
    )
    transport: httpx.AsyncBaseTransport
    if settings.http_transport == "aiohttp":
        transport = AiohttpTransport(client=lambda: _aiohttp_session(settings))
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, limits=limits, follow_redirects=False
    )


def _aiohttp_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.dispatch_concurrency, limit_per_host=0, keepalive_timeout=30.0
    )
    return aiohttp.ClientSession(connector=connector, auto_decompress=False)


class InboxDispatcher:
    """POSTs one contact to the inbox API URL from settings (never one from the page)."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._client = client
        self._url_template = settings.inbox_api_url
        self._deadline_s = settings.dispatch_timeout_ms / 1000
        token = settings.inbox_api_token
        self._base_headers = {"Content-Type": "application/json"}
        if token is not None:
            self._base_headers["Authorization"] = f"Bearer {token.get_secret_value()}"

    def url_for(self, inbox_id: str) -> str:
        """The inbox API URL with the URL-quoted inbox id."""
        return self._url_template.replace("{inbox_id}", quote(inbox_id, safe=""))

    async def send(self, request: InboxRequest) -> AttemptResult:
        """Make one attempt under the overall `DISPATCH_TIMEOUT_MS` deadline."""
        headers = {**self._base_headers, "Idempotency-Key": request.idempotency_key}
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
        try:
            async with asyncio.timeout(self._deadline_s):
                response = await self._client.post(
                    self.url_for(request.inbox_id), content=body, headers=headers
                )
        except TimeoutError:
            return AttemptResult(TIMEOUT)
        except httpx.TransportError as error:
            return AttemptResult(_transport_code(error))
        return AttemptResult.http(response.status_code, response.headers.get("Retry-After"))


def _transport_code(error: httpx.TransportError) -> str:
    cause = error.__cause__
    if cause is not None and isinstance(cause, aiohttp.ClientError | OSError | TimeoutError):
        timed_out = isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError)
        return TIMEOUT if timed_out else DISPATCH_ERROR
    if isinstance(error, httpx.TimeoutException):
        return TIMEOUT
    return DISPATCH_ERROR
