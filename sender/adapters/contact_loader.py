"""Storing a `campaign start`'s contacts: COPY straight into contacts while nothing can
conflict, else COPY into a staging table and one merge per chunk.

Each chunk is one transaction on one connection. A campaign with no contacts yet gets
its plain blocks (`FastBlock`) as COPY text straight into `contacts`: no Python object
per row, no staging, no speculative insert. The first block refused for a duplicate key
(a contact id twice in the file) switches the rest of the start to the merge, as does a
campaign that already has contacts (a re-run):

COPY the rows into a session-local staging table (emptied at commit), then a single
`INSERT … SELECT … ON CONFLICT DO NOTHING` into contacts, so re-runs never duplicate or
reset a contact. A conflicting row created since this start began (by the server's
clock) was stored by an earlier chunk of this very file, i.e. a duplicate contact id,
reported with its line before the chunk commits. Only when some rows conflicted (a
re-run) are the chunk's pending contacts read back; otherwise every row is new and
pending as read.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from sender.adapters.ledger import COMPLETE_SQL
from sender.core.contact_blocks import FastBlock
from sender.core.contacts_csv import MAX_PROBLEMS_SHOWN, ContactChunk
from sender.core.pagination import contact_parts
from sender.errors import InvalidContacts

# Longer than any pause between two chunks; a start killed halfway lets its campaign
# complete again this long after its last chunk.
LOADING_LEASE_S = 600.0

# Variables go in as JSON text: asyncpg's binary COPY has no jsonb encoder.
_STAGE_SQL = """
CREATE TEMP TABLE IF NOT EXISTS start_stage (
    contact_id text NOT NULL, to_address text NOT NULL, variables text NOT NULL,
    line integer NOT NULL
) ON COMMIT DELETE ROWS
"""

_MERGE_SQL = """
INSERT INTO contacts (campaign_id, contact_id, to_address, variables, created_at)
SELECT $1, contact_id, to_address, variables::jsonb, $2 FROM start_stage
    ON CONFLICT (campaign_id, contact_id) DO NOTHING
"""

_DUPLICATES_SQL = """
SELECT s.line, s.contact_id FROM start_stage AS s
  JOIN contacts AS c ON c.campaign_id = $1 AND c.contact_id = s.contact_id
 WHERE c.created_at >= $2 AND c.xmin <> pg_current_xact_id()::xid
 ORDER BY s.line
"""

_PENDING_SQL = """
SELECT c.contact_id, c.to_address, c.variables FROM start_stage AS s
  JOIN contacts AS c ON c.campaign_id = $1 AND c.contact_id = s.contact_id
 WHERE c.status = 'pending'
 ORDER BY s.line
"""

_BEGIN_SQL = """
SELECT clock_timestamp(), EXISTS (SELECT 1 FROM contacts WHERE campaign_id = $1)
"""

_COPY_COLUMNS = ("campaign_id", "contact_id", "to_address", "variables")

_LEASE_SQL = """
UPDATE campaigns SET loading_until = now() + make_interval(secs => $2)
 WHERE campaign_id = $1
"""


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """What a chunk left in the ledger: how many rows were new, and the pending ones as
    page JSON (`page_bodies`' parts: contact i is `parts[i*width:(i+1)*width]`)."""

    added: int
    parts: list[bytes]
    width: int = 1


class ContactLoader:
    """Stores one start's chunks over one connection held for the whole start."""

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record], campaign_id: str) -> None:
        self._conn = conn
        self._campaign_id = campaign_id
        self._started = datetime.datetime.now(datetime.UTC)
        self._staged = False
        self._direct: bool | None = None  # known at the first chunk

    async def store(self, chunk: ContactChunk | FastBlock) -> StoredChunk:
        """Store the chunk idempotently; raise `InvalidContacts` (nothing of it kept) for a
        contact id already stored earlier from this file."""
        if self._direct is None:
            row = await self._conn.fetchrow(_BEGIN_SQL, self._campaign_id)
            assert row is not None
            self._started, self._direct = row[0], not row[1]
        if isinstance(chunk, FastBlock):
            if self._direct:
                try:
                    return await self._copy(chunk)
                except asyncpg.UniqueViolationError:
                    self._direct = False
            chunk = await asyncio.to_thread(chunk.as_chunk, None)
        return await self._merge(chunk)

    async def _copy(self, block: FastBlock) -> StoredChunk:
        conn = self._conn
        async with conn.transaction():
            await conn.execute(_LEASE_SQL, self._campaign_id, LOADING_LEASE_S)
            await conn.copy_to_table(
                "contacts", source=_once(block.copy_text), columns=_COPY_COLUMNS, format="text"
            )
        return StoredChunk(block.rows, block.parts, block.width)

    async def _merge(self, chunk: ContactChunk) -> StoredChunk:
        conn, campaign = self._conn, self._campaign_id
        if not self._staged:
            await conn.execute(_STAGE_SQL)
            self._staged = True
        async with conn.transaction():
            await conn.execute(_LEASE_SQL, campaign, LOADING_LEASE_S)
            await conn.copy_records_to_table(
                "start_stage",
                records=[(c, t, orjson.dumps(v).decode(), n) for c, t, v, n in chunk.rows],
                columns=("contact_id", "to_address", "variables", "line"),
            )
            result = await conn.execute(_MERGE_SQL, campaign, self._started)
            added = int(result.split()[-1])
            if added == len(chunk.rows):
                return StoredChunk(added, contact_parts([(c, t, v) for c, t, v, _ in chunk.rows]))
            await self._refuse_duplicates()
            rows = await conn.fetch(_PENDING_SQL, campaign)
        return StoredChunk(added, contact_parts([(r[0], r[1], r[2]) for r in rows]))

    async def finish(self) -> None:
        """Every chunk is stored: the campaign may complete (at once, if nothing is left)."""
        await self._conn.execute(
            "UPDATE campaigns SET loading_until = NULL WHERE campaign_id = $1", self._campaign_id
        )
        await self._conn.fetch(COMPLETE_SQL, [self._campaign_id])

    async def _refuse_duplicates(self) -> None:
        found: list[Any] = await self._conn.fetch(_DUPLICATES_SQL, self._campaign_id, self._started)
        if found:
            problems = [
                f"line {r['line']}: duplicate contact_id {r['contact_id']}"
                " (first on an earlier line)"
                for r in found[:MAX_PROBLEMS_SHOWN]
            ]
            raise InvalidContacts(problems, len(found))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
