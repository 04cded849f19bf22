"""Contacts CSV read as whole blocks of bytes when the file is plain (pure, no I/O).

Most exports are plain: no quotes, no escapes, no control characters, every line with
all its fields. A block of such lines is checked by one regular expression and turned
into COPY text and page JSON by a handful of C-level byte operations, so no Python
object is built per row (a 10 M-row file). The first block that is not plain, and
everything after it, goes through `read_chunks` (the csv module), which names every
bad line: the fast path only ever accepts rows that `read_chunks` would accept too.

A block with a contact id twice goes through `read_chunks` too; an id already stored
from an earlier block is refused by the primary key, and the block parsed again with
`as_chunk` for the merge, which names the line.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from sender.core.contacts_csv import CHUNK_ROWS, REQUIRED, ContactChunk, read_chunks
from sender.core.pagination import fields_bytes

# Bytes of CSV per block: about 30,000 rows of a typical export.
BLOCK_BYTES = 1 << 20
# Anything else needs quoting or escaping in CSV, COPY text or JSON.
_PLAIN_VALUE = rb'[^\x00-\x1f",\\\x7f]'
_ID = rb"(?![.]+(?:,|\n))[A-Za-z0-9_.:@-]{1,128}"
_TO = _PLAIN_VALUE + rb"{1,320}"
# The csv module refuses a field over 128 KiB: such a line takes the csv path.
_VALUE = _PLAIN_VALUE + rb"{0,131072}"


@dataclass(frozen=True, slots=True)
class FastBlock:
    """Plain rows ready for COPY (text format) and for pages, with their CSV source."""

    copy_text: bytes
    # contact i's JSON (then a comma) is parts[i * width : (i + 1) * width] joined
    parts: list[bytes]
    width: int
    rows: int
    first_line: int
    header: str
    source: bytes

    def as_chunk(self, max_contact_bytes: int | None) -> ContactChunk:
        """The block parsed row by row (raises `InvalidContacts` naming a duplicate)."""
        text = io.StringIO(self.header + self.source.decode(), newline="")
        chunks = list(
            read_chunks(
                text,
                self.rows + 1,
                max_contact_bytes=max_contact_bytes,
                lines_before=self.first_line - 2,
            )
        )
        return chunks[0]


class _Plain:
    """The plain-line pattern and the COPY/JSON templates of one header."""

    def __init__(self, campaign_id: str, names: list[str], max_contact_bytes: int | None) -> None:
        self._width = len(names)
        ids = names.index("contact_id"), names.index("to")
        self._order = [*ids, *(i for i, n in enumerate(names) if n not in REQUIRED)]
        variables = [n for n in names if n not in REQUIRED]
        line = b",".join(_ID if n == "contact_id" else _TO if n == "to" else _VALUE for n in names)
        self._lines = re.compile(rb"(?:" + line + rb"\n)*+")
        keys = [orjson.dumps(n) for n in variables]
        *joints, last = _variable_joints(keys)
        self._json = [b'{"contact_id":"', b'","to":"', *joints, last + b"},"]
        self._copy = _copy_joints(campaign_id, [k.replace(b"\\", b"\\\\") for k in keys])
        # a plain line's JSON is its length, less its commas, plus the empty contact's
        empty = fields_bytes("", "", dict.fromkeys(variables, ""))
        self._longest = (
            None if max_contact_bytes is None else max_contact_bytes - empty + len(names) - 1
        )

    def _too_long(self, source: bytes) -> bool:
        """Whether some line makes a contact too large for a page."""
        longest = self._longest
        return (
            longest is not None
            and len(source) > longest
            and re.search(rb"[^\n]{%d}" % (longest + 1), source) is not None
        )

    def block(self, source: bytes, first_line: int, header: str) -> FastBlock | None:
        """The block's rows, or None when some line is not plain (or not valid UTF-8)."""
        if not source.endswith(b"\n") or self._lines.fullmatch(source) is None:
            return None
        if self._too_long(source):
            return None
        try:
            codecs.decode(source, "utf-8")
        except UnicodeDecodeError:
            return None
        fields = source.replace(b"\n", b",").split(b",")
        rows = len(fields) // self._width
        columns = [fields[i :: self._width][:rows] for i in self._order]
        if len(set(columns[0])) != rows:  # a duplicate id: let read_chunks name its lines
            return None
        return FastBlock(
            b"".join(_interleave(self._copy, columns, rows)),
            _interleave(self._json, columns, rows),
            2 * len(columns) + 1,
            rows,
            first_line,
            header,
            source,
        )


def _variable_joints(keys: list[bytes]) -> list[bytes]:
    """What goes between `to` and each variable's value, and after the last, in JSON."""
    if not keys:
        return [b'","variables":{}']
    joints = [b'","variables":{' + keys[0] + b':"']
    joints += [b'",' + key + b':"' for key in keys[1:]]
    return [*joints, b'"}']


def _copy_joints(campaign_id: str, keys: list[bytes]) -> list[bytes]:
    """COPY text of one contact: campaign, id, to and the variables as JSON."""
    if not keys:
        return [campaign_id.encode() + b"\t", b"\t", b"\t{}\n"]
    joints = [campaign_id.encode() + b"\t", b"\t", b"\t{" + keys[0] + b':"']
    joints += [b'",' + key + b':"' for key in keys[1:]]
    return [*joints, b'"}\n']


def _interleave(joints: list[bytes], columns: list[list[bytes]], rows: int) -> list[bytes]:
    """joints[0], column 0, joints[1], column 1, … joints[-1], for each row in turn."""
    width = len(joints) + len(columns)
    out: list[bytes] = [b""] * (rows * width)
    for j, joint in enumerate(joints):
        out[2 * j :: width] = [joint] * rows
    for j, column in enumerate(columns):
        out[2 * j + 1 :: width] = column
    return out


def read_blocks(
    stream: BinaryIO,
    campaign_id: str,
    *,
    max_contact_bytes: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[FastBlock | ContactChunk]:
    """The file's contacts: plain blocks while the lines are plain, then `read_chunks`'
    chunks for the rest (same checks, same messages, same line numbers)."""
    head = stream.readline()
    header = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    names = header.rstrip("\r\n").split(",")
    plain = _Plain(campaign_id, names, max_contact_bytes) if _plain(head, names) else None
    lines_read, rows_read = 0, 0
    source = b""
    while plain is not None:
        source = stream.read(block_bytes)
        source += stream.readline() if source and not source.endswith(b"\n") else b""
        if not source:
            if rows_read == 0:
                break
            return
        block = plain.block(source, lines_read + 2, header)
        if block is None:
            break
        yield block
        lines_read += block.rows
        rows_read += block.rows
        source = b""
    prefixed = io.BufferedReader(_Prefixed(head + source, stream))
    rest = io.TextIOWrapper(prefixed, encoding="utf-8-sig", newline="")
    yield from read_chunks(
        rest,
        CHUNK_ROWS,
        max_contact_bytes=max_contact_bytes,
        lines_before=lines_read,
        rows_before=rows_read,
    )


def _plain(head: bytes, names: list[str]) -> bool:
    """Whether the header is plain, names both required columns, and each column once."""
    return (
        re.fullmatch(rb"(?:\xef\xbb\xbf)?[^\x00-\x1f\"\\\x7f]*\n", head) is not None
        and all(name in names for name in REQUIRED)
        and len(set(names)) == len(names)
    )


class _Prefixed(io.RawIOBase):
    """`prefix`, then the rest of `stream`: the bytes already read put back in front."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            size = min(len(buffer), len(self._prefix))
            buffer[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
