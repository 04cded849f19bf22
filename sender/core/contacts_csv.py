"""Contacts from a CSV file (`contact_id,to`, extra columns become variables); pure parsing."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator

from pydantic import ValidationError

from sender.core.page import Contact
from sender.core.pagination import contact_bytes
from sender.errors import InvalidContacts

REQUIRED = ("contact_id", "to")
MAX_PROBLEMS_SHOWN = 10


def parse_contacts(lines: Iterable[str], *, max_contact_bytes: int | None = None) -> list[Contact]:
    """Every row as a Contact, or `InvalidContacts` naming the bad lines (all rows checked).

    `max_contact_bytes` refuses a contact too large for a page of its own. A line the csv
    module cannot read (a field over its 128 KiB limit, a NUL) ends the check there.
    """
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames or []
    except csv.Error as error:
        raise InvalidContacts([f"line 1: {error}"], 1) from None
    _check_header(list(header))
    contacts: list[Contact] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for line, row in _rows(reader, problems):
        contact, problem = _contact(row, line, first_line)
        if problem is None and contact is not None and max_contact_bytes is not None:
            problem = _oversize(contact, line, max_contact_bytes)
        if problem is not None:
            problems.append(problem)
        elif contact is not None:
            contacts.append(contact)
    if problems:
        raise InvalidContacts(problems[:MAX_PROBLEMS_SHOWN], len(problems))
    if not contacts:
        raise InvalidContacts(["no contacts in the file"], 1)
    return contacts


def _check_header(header: list[str]) -> None:
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InvalidContacts([f"line 1: missing column(s) {', '.join(missing)}"], 1)
    duplicates = [name for name, count in Counter(header).items() if count > 1]
    if duplicates:
        raise InvalidContacts([f"line 1: duplicate column(s) {', '.join(duplicates)}"], 1)


def _rows(
    reader: csv.DictReader[str], problems: list[str]
) -> Iterator[tuple[int, dict[str, str | None]]]:
    """(line, row) pairs; a row the csv module refuses becomes a problem and ends the file."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            problems.append(f"line {reader.reader.line_num}: {error}")
            return
        yield reader.line_num, row


def _oversize(contact: Contact, line: int, max_bytes: int) -> str | None:
    size = contact_bytes(contact)
    if size <= max_bytes:
        return None
    return (
        f"line {line}: contact {contact.contact_id} is {size} bytes as JSON,"
        f" more than a page can hold ({max_bytes} with this message; MAX_PAGE_BYTES)"
    )


def _contact(
    row: dict[str, str | None], line: int, first_line: dict[str, int]
) -> tuple[Contact | None, str | None]:
    if None in row:
        return None, f"line {line}: more fields than columns"
    variables = {k: v or "" for k, v in row.items() if k not in REQUIRED and k is not None}
    try:
        contact = Contact(
            contact_id=row["contact_id"] or "", to=row["to"] or "", variables=variables
        )
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        return None, f"line {line}: {first['loc'][0]}: {first['msg']}"
    if contact.contact_id in first_line:
        return None, (
            f"line {line}: duplicate contact_id {contact.contact_id}"
            f" (first on line {first_line[contact.contact_id]})"
        )
    first_line[contact.contact_id] = line
    return contact, None
