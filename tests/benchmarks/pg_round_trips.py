"""Counting PostgreSQL round trips on the wire: a TCP proxy that reads the server's replies.

Every round trip (a simple query, or an extended-protocol exchange ending in Sync) ends
with exactly one ReadyForQuery message ('Z') from the server, and every server message is
framed as a type byte and a 4-byte big-endian length that includes itself. So counting
'Z' messages in the server-to-client stream counts round trips, whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 65536


class ServerReplyParser:
    """Follows the server's message framing across chunk boundaries; counts ReadyForQuery."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.ready_for_query = 0

    def feed(self, data: bytes) -> None:
        """Take the next bytes the server sent."""
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 5:
            (length,) = struct.unpack_from("!I", buffer, offset + 1)
            if len(buffer) - offset < 1 + length:
                break
            if buffer[offset] == ord("Z"):
                self.ready_for_query += 1
            offset += 1 + length
        del buffer[:offset]


class RoundTripCounter:
    """Proxies 127.0.0.1:<port> to a PostgreSQL server and counts round trips of all clients."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self._database_url = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._parsers: list[ServerReplyParser] = []
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def round_trips(self) -> int:
        """Round trips completed so far, over every connection."""
        return sum(parser.ready_for_query for parser in self._parsers)

    @property
    def url(self) -> str:
        """`database_url` pointed at this proxy, without TLS (the counter reads plain frames)."""
        parts = self._database_url
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        query = "&".join(filter(None, [parts.query, "sslmode=disable"]))
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    async def __aenter__(self) -> RoundTripCounter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        parser = ServerReplyParser()
        self._parsers.append(parser)
        pipes = [
            asyncio.create_task(_pipe(client_r, server_w, None)),
            asyncio.create_task(_pipe(server_r, client_w, parser)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: ServerReplyParser | None
) -> None:
    try:
        while data := await reader.read(_CHUNK):
            if parser is not None:
                parser.feed(data)
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()
