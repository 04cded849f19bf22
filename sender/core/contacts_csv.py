"""Contacts from a CSV file (`contact_id,to`, extra columns become variables); pure parsing.

The file is read in chunks so memory stays flat whatever its size. Each chunk is checked
whole before it is handed on, so a bad row stops the start before anything of its chunk
is stored or published; problems name their CSV line. The rules are those of the page
schema (`Contact`), checked here without building a model per row (a 10 M-row file).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sender.core.page import Contact, is_valid_id
from sender.core.pagination import fields_bytes
from sender.errors import InvalidContacts

if TYPE_CHECKING:
    from _csv import Reader  # the type csv.reader returns

REQUIRED = ("contact_id", "to")
MAX_PROBLEMS_SHOWN = 10
CHUNK_ROWS = 20_000
MAX_TO_CHARS = 320

# contact_id, to, variables, CSV line (of the row's last physical line, as csv counts)
ContactRow = tuple[str, str, dict[str, str], int]


@dataclass(frozen=True, slots=True)
class ContactChunk:
    """Consecutive valid rows of the file, with unique contact ids among them."""

    rows: list[ContactRow]

    @property
    def first_line(self) -> int:
        """The CSV line of the chunk's first row."""
        return self.rows[0][3]


def read_chunks(
    lines: Iterable[str],
    chunk_rows: int = CHUNK_ROWS,
    *,
    max_contact_bytes: int | None = None,
    lines_before: int = 0,
    rows_before: int = 0,
) -> Iterator[ContactChunk]:
    """Yield the file's rows in chunks of `chunk_rows`; raise `InvalidContacts` at the first
    chunk holding a bad row (naming every bad line of it) or when there are no rows.

    `max_contact_bytes` refuses a contact too large for a page of its own. A line the csv
    module cannot read (a field over its 128 KiB limit, a NUL) ends the check there.
    `lines` may be the header followed by the rest of a file whose first `lines_before`
    lines after the header (holding `rows_before` rows) were read another way.
    """
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
    except csv.Error as error:
        raise InvalidContacts([f"line 1: {error}"], 1) from None
    _check_header(header)
    columns = _Columns(header, max_contact_bytes)
    rows: list[ContactRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    total = 0
    for fields in _records(reader, problems, lines_before):
        if not fields:  # a blank line, as csv.DictReader skipped them
            continue
        problem = columns.check(fields, reader.line_num + lines_before, seen, rows)
        if problem is not None:
            problems.append(problem)
        if len(rows) + len(problems) >= chunk_rows:
            yield _chunk(rows, problems)
            total += len(rows)
            rows, problems, seen = [], [], {}
    if rows or problems:
        yield _chunk(rows, problems)
        total += len(rows)
    if total + rows_before == 0:
        raise InvalidContacts(["no contacts in the file"], 1)


def parse_contacts(lines: Iterable[str], *, max_contact_bytes: int | None = None) -> list[Contact]:
    """Every row as a Contact (a small file held whole), or `InvalidContacts`."""
    return [
        Contact(contact_id=c, to=t, variables=v)
        for chunk in read_chunks(lines, max_contact_bytes=max_contact_bytes)
        for c, t, v, _ in chunk.rows
    ]


def _check_header(header: list[str]) -> None:
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InvalidContacts([f"line 1: missing column(s) {', '.join(missing)}"], 1)
    if any("\x00" in name for name in header):
        raise InvalidContacts(["line 1: a column name holds a NUL character"], 1)
    duplicates = [name for name, count in Counter(header).items() if count > 1]
    if duplicates:
        raise InvalidContacts([f"line 1: duplicate column(s) {', '.join(duplicates)}"], 1)


def _records(reader: Reader, problems: list[str], lines_before: int) -> Iterator[list[str]]:
    """The reader's rows; one the csv module refuses becomes a problem and ends the file."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            problems.append(f"line {reader.line_num + lines_before}: {error}")
            return


class _Columns:
    """Where the required columns sit in a row, and which others are variables."""

    def __init__(self, header: list[str], max_contact_bytes: int | None) -> None:
        self._max_contact_bytes = max_contact_bytes
        self._width = len(header)
        self._id = header.index("contact_id")
        self._to = header.index("to")
        self._variables = [(i, n) for i, n in enumerate(header) if n not in REQUIRED]

    def check(
        self, fields: list[str], line: int, seen: dict[str, int], rows: list[ContactRow]
    ) -> str | None:
        """Append the row to `rows` if valid; else return the problem with its line."""
        if len(fields) > self._width:
            return f"line {line}: more fields than columns"
        fields = fields + [""] * (self._width - len(fields))
        contact_id, to = fields[self._id], fields[self._to]
        if not is_valid_id("contact id", contact_id):
            return (
                f"line {line}: contact_id: must be 1-128 chars of [A-Za-z0-9_.:@-], not only dots"
            )
        if not 0 < len(to) <= MAX_TO_CHARS or "\x00" in to:
            return f"line {line}: to: must be 1-{MAX_TO_CHARS} chars without NUL"
        variables = {name: fields[i] for i, name in self._variables}
        if any("\x00" in value for value in variables.values()):
            return f"line {line}: variables: must not contain NUL characters"
        if contact_id in seen:
            return (
                f"line {line}: duplicate contact_id {contact_id} (first on line {seen[contact_id]})"
            )
        limit = self._max_contact_bytes
        if limit is not None and (size := fields_bytes(contact_id, to, variables)) > limit:
            return (
                f"line {line}: contact {contact_id} is {size} bytes as JSON,"
                f" more than a page can hold ({limit} with this message; MAX_PAGE_BYTES)"
            )
        seen[contact_id] = line
        rows.append((contact_id, to, variables, line))
        return None


def _chunk(rows: list[ContactRow], problems: list[str]) -> ContactChunk:
    if problems:
        raise InvalidContacts(problems[:MAX_PROBLEMS_SHOWN], len(problems))
    return ContactChunk(rows)
