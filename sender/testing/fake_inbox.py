"""A scriptable fake of the inbox HTTP API, served over real HTTP on 127.0.0.1.

Used by integration tests, the demo and benchmarks. Each POST to
``/inboxes/{inbox_id}/messages`` is recorded and answered by a :class:`Step`: the next
scripted step for its contact, else the inbox default, else the global default.

Run standalone (benchmarks)::

    python -m sender.testing.fake_inbox --port 8080 --latency-ms 5 --status 200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["FakeInbox", "RecordedRequest", "Step", "main"]

_HOST = "127.0.0.1"
_PATH = "/inboxes/{inbox_id}/messages"
_DRIP_INTERVAL_S = 0.5
_DRIP_BODY = b" " * 118 + b"{}"  # 120 bytes, still valid JSON once complete
_FLOOD_CHUNK = b" " * 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP RST
_SHUTDOWN_TIMEOUT_S = 0.5
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted answer."""

    status: int = 200
    delay_s: float = 0.0
    """Wait this long before answering (latency)."""
    retry_after: str | None = None
    """Value of a ``Retry-After`` header, if any."""
    action: Literal["respond", "reset", "hang", "drip", "garbage", "flood"] = "respond"
    """``respond``: normal answer. ``reset``: drop the TCP connection (RST) without
    answering. ``hang``: never answer until the server stops. ``drip``: send status and
    headers, then the 120-byte body one byte every 0.5 s. ``garbage``: answer bytes that
    are not HTTP, then close (a broken proxy in front of the inbox). ``flood``: send
    status and headers, then a body that never ends, as fast as the client reads it."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One POST received by the fake inbox."""

    received_at: float
    """``time.monotonic()`` when the request arrived."""
    inbox_id: str
    contact_id: str
    """From the JSON body (``""`` if the body is not a JSON object)."""
    idempotency_key: str | None
    authorization: str | None
    body: dict[str, Any] = field(repr=False)
    """Parsed JSON body (``{}`` if not a JSON object)."""
    step: Step
    """The step used to answer it."""
    raw_body: bytes = field(default=b"", repr=False)
    """The body bytes as received."""


class FakeInbox:
    """Fake inbox HTTP API server; use as ``async with FakeInbox() as inbox: ...``."""

    def __init__(
        self, *, port: int = 0, default: Step = Step(), record: bool = True, host: str = _HOST
    ) -> None:
        """Configure (not start) the server; ``record=False`` keeps no request records."""
        self.requests: list[RecordedRequest] = []
        self.paths: list[str] = []
        """``METHOD raw-path`` of every request received, routed or not (when recording)."""
        self._host = host
        self._requested_port = port
        self._default = default
        self._record = record
        self._scripts: dict[str, collections.deque[Step]] = {}
        self._inbox_defaults: dict[str, Step] = {}
        self._inbox_scripts: dict[str, collections.deque[Step]] = {}
        self._received = 0
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.first_at = 0.0
        self.last_at = 0.0
        self.flood_bytes = 0
        """Body bytes written by ``flood`` steps (what the clients let through)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1 (a free port when ``port=0``) and start serving."""
        if self._runner is not None:
            raise RuntimeError("FakeInbox already started")
        app = web.Application(middlewares=[self._record_path])
        app.router.add_post(_PATH, self._handle)
        app.router.add_get("/stats", self._stats)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._stopping.clear()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving; hanging, dripping and delayed handlers are released first."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()

    async def __aenter__(self) -> FakeInbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (the requested one before start, unless it was 0)."""
        if self._port is not None:
            return self._port
        if self._requested_port:
            return self._requested_port
        raise RuntimeError("FakeInbox not started: port unknown")

    @property
    def url_template(self) -> str:
        """``http://127.0.0.1:PORT/inboxes/{inbox_id}/messages`` with ``{inbox_id}`` kept."""
        return f"http://{self._host}:{self.port}{_PATH}"

    # -- scripting ---------------------------------------------------------------------

    def script(self, contact_id: str, *steps: Step) -> None:
        """Queue steps for the next requests of this contact (after any already queued)."""
        self._scripts.setdefault(contact_id, collections.deque()).extend(steps)

    def script_inbox(self, inbox_id: str, *steps: Step) -> None:
        """Queue steps for the next unscripted requests to this inbox, whatever the contact."""
        self._inbox_scripts.setdefault(inbox_id, collections.deque()).extend(steps)

    def set_inbox_default(self, inbox_id: str, step: Step) -> None:
        """Answer every unscripted request to this inbox with ``step``."""
        self._inbox_defaults[inbox_id] = step

    def reset(self) -> None:
        """Forget scripts, inbox defaults and records (the global default stays)."""
        self._scripts.clear()
        self._inbox_defaults.clear()
        self._inbox_scripts.clear()
        self.requests.clear()
        self.paths.clear()
        self._received = 0
        self.first_at = 0.0
        self.last_at = 0.0

    # -- inspection --------------------------------------------------------------------

    def requests_for(self, contact_id: str) -> list[RecordedRequest]:
        """Recorded requests of one contact, in arrival order."""
        return [r for r in self.requests if r.contact_id == contact_id]

    def keys(self) -> collections.Counter[str]:
        """Number of POSTs per Idempotency-Key (requests without one are not counted)."""
        return collections.Counter(
            r.idempotency_key for r in self.requests if r.idempotency_key is not None
        )

    @property
    def received(self) -> int:
        """Requests received since start or the last :meth:`reset` (even if not recorded)."""
        return self._received

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``count`` requests have arrived; raise ``TimeoutError`` otherwise."""
        async with asyncio.timeout(timeout):
            while self._received < count:
                self._arrived.clear()
                await self._arrived.wait()

    # -- serving -----------------------------------------------------------------------

    def _next_step(self, inbox_id: str, contact_id: str) -> Step:
        queue = self._scripts.get(contact_id)
        if queue:
            step = queue.popleft()
            if not queue:
                del self._scripts[contact_id]
            return step
        by_inbox = self._inbox_scripts.get(inbox_id)
        if by_inbox:
            return by_inbox.popleft()
        return self._inbox_defaults.get(inbox_id, self._default)

    @web.middleware
    async def _record_path(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._record:
            self.paths.append(f"{request.method} {request.raw_path}")
        return await handler(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received_at = time.monotonic()
        inbox_id = request.match_info["inbox_id"]
        raw_body = await request.read()
        body = _parse_body(raw_body)
        raw_contact = body.get("contact_id")
        contact_id = "" if raw_contact is None else str(raw_contact)
        step = self._next_step(inbox_id, contact_id)
        if self._record:
            headers = request.headers
            self.requests.append(
                RecordedRequest(
                    received_at=received_at,
                    inbox_id=inbox_id,
                    contact_id=contact_id,
                    idempotency_key=headers.get("Idempotency-Key"),
                    authorization=headers.get("Authorization"),
                    body=body,
                    step=step,
                    raw_body=raw_body,
                )
            )
        self._received += 1
        self.first_at = self.first_at or received_at
        self.last_at = received_at
        self._arrived.set()
        return await self._answer(request, step)

    async def _stats(self, _: web.Request) -> web.Response:
        """Counts for benchmarks in other processes (times are CLOCK_MONOTONIC seconds)."""
        return web.json_response(
            {"received": self._received, "first_at": self.first_at, "last_at": self.last_at}
        )

    async def _answer(self, request: web.Request, step: Step) -> web.StreamResponse:
        if step.delay_s > 0 and await self._stopped_within(step.delay_s):
            return _drop(request)
        if step.action == "respond":
            return self._respond(step)
        if step.action == "drip":
            return await self._drip(request, step)
        if step.action == "garbage":
            return _garbage(request)
        if step.action == "flood":
            return await self._flood(request, step)
        if step.action == "hang":
            await self._stopping.wait()
        return _drop(request)

    def _respond(self, step: Step) -> web.Response:
        if 200 <= step.status < 300:
            payload = {"message_id": f"m-{next(self._message_ids)}", "status": "accepted"}
        else:
            payload = {"error": f"scripted status {step.status}"}
        return web.Response(
            status=step.status,
            body=orjson.dumps(payload),
            content_type=_JSON,
            headers=_retry_after(step),
        )

    async def _drip(self, request: web.Request, step: Step) -> web.StreamResponse:
        response = web.StreamResponse(status=step.status, headers=_retry_after(step))
        response.content_type = _JSON
        response.content_length = len(_DRIP_BODY)
        await response.prepare(request)
        for index in range(len(_DRIP_BODY)):
            if index and await self._stopped_within(_DRIP_INTERVAL_S):
                return _drop(request, response)
            await response.write(_DRIP_BODY[index : index + 1])
        return response

    async def _flood(self, request: web.Request, step: Step) -> web.StreamResponse:
        """An endless chunked body; ends when the client hangs up or the server stops."""
        response = web.StreamResponse(status=step.status, headers=_retry_after(step))
        response.content_type = _JSON
        await response.prepare(request)
        try:
            while not self._stopping.is_set():
                await response.write(_FLOOD_CHUNK)
                self.flood_bytes += len(_FLOOD_CHUNK)
        except (ConnectionError, RuntimeError):  # the client went away
            pass
        return _drop(request, response)

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if the server is stopping."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(step: Step) -> dict[str, str] | None:
    return None if step.retry_after is None else {"Retry-After": step.retry_after}


def _garbage(request: web.Request) -> web.StreamResponse:
    """Write a status line that is not HTTP and close; aiohttp's own answer then goes nowhere."""
    transport = request.transport
    if transport is not None:
        transport.write(b"HTTP/1.1 ABC Broken\r\n\r\n")
        transport.close()
    return web.Response()


def _drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Abort the connection with a TCP RST; aiohttp then fails to write ``response`` quietly."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()
    return response if response is not None else web.Response()


# -- standalone server -------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a fake inbox HTTP API.")
    parser.add_argument("--host", default=_HOST, help="address to bind (0.0.0.0 in compose)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (0: any free)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    parser.add_argument("--status", type=int, default=200, help="status of every answer")
    return parser.parse_args(argv)


async def _serve(host: str, port: int, default: Step) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    inbox = FakeInbox(port=port, default=default, record=False, host=host)
    async with inbox:
        print(f"fake inbox listening on {inbox.url_template}", flush=True)
        await stop.wait()
    print(f"fake inbox stopped after {inbox.received} requests", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (for benchmarks, as a separate process)."""
    args = _parse_args(argv)
    default = Step(status=args.status, delay_s=args.latency_ms / 1000.0)
    asyncio.run(_serve(args.host, args.port, default))


if __name__ == "__main__":
    main()
