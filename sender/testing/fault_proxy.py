"""A TCP proxy on 127.0.0.1 that a test switches between pass, reset and blackhole.

pass       bytes flow both ways
reset      every open connection is cut and new ones are closed at once (service down)
blackhole  connections are accepted and kept, but nothing is forwarded (a partition:
           only timeouts notice it)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["pass", "reset", "blackhole"]
_CHUNK = 65536


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `target`; `mode` can change at any time."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.mode: Mode = "pass"
        self._passing = asyncio.Event()
        self._passing.set()
        self.port = 0

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def set_mode(self, mode: Mode) -> None:
        """Switch behaviour; `reset` also cuts every connection open now."""
        self.mode = mode
        if mode == "blackhole":
            self._passing.clear()
        else:
            self._passing.set()
        if mode == "reset":
            self._cut_all()

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            client_w.transport.abort()
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, upstream_w))
        pipes = [
            asyncio.create_task(self._pipe(client_r, upstream_w)),
            asyncio.create_task(self._pipe(upstream_r, client_w)),
        ]
        self._pipes.update(pipes)
        # Either side closing ends the pair, as a real connection close would.
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for writer in (client_w, upstream_w):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                await self._passing.wait()  # blackhole: hold the bytes until the partition heals
                if self.mode == "reset":
                    return
                writer.write(data)
                await writer.drain()
