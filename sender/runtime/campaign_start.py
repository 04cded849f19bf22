"""The `campaign start` pipeline: parse, store and publish at once, in bounded memory.

    file ──parse (a thread, one chunk ahead)──> store (COPY, one tx per chunk)
         ──> publish (pages of the chunk's pending contacts, confirmed)

A chunk's pages go out only after it commits, while the next chunk is being parsed and
stored. At most a few chunks are in memory at once, whatever the size of the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sender.adapters.contact_loader import ContactLoader, StoredChunk
from sender.adapters.page_publisher import PagePublisher
from sender.core.contact_blocks import FastBlock
from sender.core.contacts_csv import ContactChunk
from sender.core.pagination import page_bodies
from sender.errors import InvalidContacts

# Stored chunks waiting for the publisher: storing runs at most this far ahead.
_PUBLISH_BACKLOG = 2


@dataclass
class StartProgress:
    """Running totals of a start, for its progress bar."""

    stored: int = 0
    added: int = 0
    published: int = 0
    pages: int = 0


@dataclass(frozen=True, slots=True)
class PageSpec:
    """What every page of the campaign carries, and the page limits."""

    campaign_id: str
    inbox_id: str
    message: dict[str, Any]
    page_size: int
    max_bytes: int


OnProgress = Callable[[StartProgress], None]
Chunk = ContactChunk | FastBlock


@dataclass
class StartPipeline:
    """Stores `chunks` through `loader` and publishes their pending contacts."""

    loader: ContactLoader
    publisher: PagePublisher
    spec: PageSpec
    on_new_contacts: Callable[[], Awaitable[None]]
    on_progress: OnProgress = lambda _: None
    progress: StartProgress = field(default_factory=StartProgress)

    async def run(self, chunks: Iterator[Chunk]) -> StartProgress:
        """Every chunk stored and its pages confirmed; the campaign may then complete.

        A bad row raises `InvalidContacts` once the chunks stored before it are published.
        """
        backlog: asyncio.Queue[StoredChunk | None] = asyncio.Queue(_PUBLISH_BACKLOG)
        publishing = asyncio.create_task(self._publish(backlog), name="start-publisher")
        try:
            try:
                await self._store(chunks, backlog, publishing)
            except InvalidContacts:
                await _put_unless_failed(backlog, None, publishing)
                await publishing
                raise
            await _put_unless_failed(backlog, None, publishing)
            await publishing
        finally:
            publishing.cancel()
        await self.loader.finish()
        return self.progress

    async def _store(
        self,
        chunks: Iterator[Chunk],
        backlog: asyncio.Queue[StoredChunk | None],
        publishing: asyncio.Task[None],
    ) -> None:
        reopened = False
        async for chunk in _parsed_ahead(chunks):
            stored = await self.loader.store(chunk)
            if stored.added and not reopened:
                await self.on_new_contacts()
                reopened = True
            self.progress.stored += _rows(chunk)
            self.progress.added += stored.added
            self.on_progress(self.progress)
            await _put_unless_failed(backlog, stored, publishing)

    async def _publish(self, backlog: asyncio.Queue[StoredChunk | None]) -> None:
        spec = self.spec
        while (stored := await backlog.get()) is not None:
            bodies = page_bodies(
                spec.campaign_id,
                spec.inbox_id,
                spec.message,
                stored.parts,
                stored.width,
                first_page=self.progress.pages,
                page_size=spec.page_size,
                max_bytes=spec.max_bytes,
            )
            await self.publisher.publish_bodies(bodies)
            self.progress.pages += len(bodies)
            self.progress.published += len(stored.parts) // stored.width
            self.on_progress(self.progress)


async def _parsed_ahead(chunks: Iterator[Chunk]) -> AsyncIterator[Chunk]:
    """The chunks, each next one parsed in a thread while the caller stores this one."""
    upcoming = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
    try:
        while (chunk := await upcoming) is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
            yield chunk
    finally:
        upcoming.cancel()


def _rows(chunk: Chunk) -> int:
    return chunk.rows if isinstance(chunk, FastBlock) else len(chunk.rows)


async def _put_unless_failed(
    backlog: asyncio.Queue[StoredChunk | None],
    item: StoredChunk | None,
    publishing: asyncio.Task[None],
) -> None:
    """Queue `item` for the publisher; raise what the publisher failed with instead."""
    put = asyncio.ensure_future(backlog.put(item))
    await asyncio.wait({put, publishing}, return_when=asyncio.FIRST_COMPLETED)
    if publishing.done() and not put.done():
        put.cancel()
    if publishing.done():
        publishing.result()
