"""Contacts from a CSV file (`contact_id,to`, extra columns become variables); pure parsing."""

from __future__ import annotations

import csv
from collections.abc import Iterable

from pydantic import ValidationError

from sender.core.page import Contact
from sender.errors import InvalidContacts

REQUIRED = ("contact_id", "to")
MAX_PROBLEMS_SHOWN = 10


def parse_contacts(lines: Iterable[str]) -> list[Contact]:
    """Every row as a Contact, or `InvalidContacts` naming the bad lines (all rows checked)."""
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InvalidContacts([f"line 1: missing column(s) {', '.join(missing)}"], 1)
    contacts: list[Contact] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        contact, problem = _contact(row, line, first_line)
        if problem is not None:
            problems.append(problem)
        elif contact is not None:
            contacts.append(contact)
    if problems:
        raise InvalidContacts(problems[:MAX_PROBLEMS_SHOWN], len(problems))
    if not contacts:
        raise InvalidContacts(["no contacts in the file"], 1)
    return contacts


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
