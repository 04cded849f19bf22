"""Contacts CSV and pagination: what `campaign start` refuses before publishing anything."""

from __future__ import annotations

import io

import pytest

from sender.core.contacts_csv import parse_contacts
from sender.core.page import Contact
from sender.core.pagination import contact_budget, paginate
from sender.errors import InvalidContacts, OversizeContact

MESSAGE = {"text": "Hi {{name}}"}


def _parse(text: str, **limits: int) -> list[Contact]:
    return parse_contacts(io.StringIO(text, newline=""), **limits)


def _problem(text: str, **limits: int) -> str:
    with pytest.raises(InvalidContacts) as caught:
        _parse(text, **limits)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_rows_become_contacts_with_extra_columns_as_variables() -> None:
    contacts = _parse("contact_id,to,name\nc-1,+551100,Ana\n")

    assert contacts == [Contact(contact_id="c-1", to="+551100", variables={"name": "Ana"})]


def test_a_byte_order_mark_is_accepted_when_read_as_utf8_sig() -> None:
    raw = "\ufeffcontact_id,to\nc-1,+551100\n".encode()

    contacts = parse_contacts(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline=""))

    assert [c.contact_id for c in contacts] == ["c-1"]


def test_duplicate_header_names_are_refused_naming_them() -> None:
    message = _problem("contact_id,to,name,name\nc-1,+551100,A,B\n")

    assert "line 1: duplicate column(s) name" in message


def test_a_field_over_the_csv_limit_is_refused_naming_its_line() -> None:
    message = _problem("contact_id,to,note\nc-1,+551100,x\nc-2,+551101," + "y" * 200_000 + "\n")

    assert "line 3: field larger than field limit" in message


def test_a_nul_in_a_field_is_refused_naming_its_line() -> None:
    assert "line 2:" in _problem("contact_id,to\nc-1,+55\x0011\n")


def test_a_contact_too_large_for_any_page_is_refused_naming_its_line() -> None:
    text = "contact_id,to,note\nc-1,+551100,short\nc-2,+551101," + "z" * 5000 + "\n"

    message = _problem(text, max_contact_bytes=4000)

    assert "line 3: contact c-2 is " in message
    assert "MAX_PAGE_BYTES" in message
    assert "c-1" not in message


def test_contact_budget_leaves_room_for_the_rest_of_the_page() -> None:
    contact = Contact(contact_id="c-1", to="+551100")
    budget = contact_budget("camp", "inbox-1", MESSAGE, 4096)

    [page] = paginate("camp", "inbox-1", MESSAGE, [contact], page_size=10, max_bytes=4096)

    assert len(page.to_json()) <= 4096
    assert 0 < budget < 4096


def test_paginate_refuses_a_single_contact_larger_than_a_page() -> None:
    big = Contact(contact_id="c-big", to="+551100", variables={"note": "z" * 5000})
    small = Contact(contact_id="c-1", to="+551101")

    with pytest.raises(OversizeContact) as caught:
        list(paginate("camp", "inbox-1", MESSAGE, [small, big], page_size=10, max_bytes=4096))

    assert caught.value.contact_id == "c-big"
    assert "MAX_PAGE_BYTES (4096)" in str(caught.value)


def test_paginate_splits_pages_that_are_too_large() -> None:
    contacts = [
        Contact(contact_id=f"c-{i}", to="+551100", variables={"note": "z" * 1000})
        for i in range(10)
    ]

    pages = list(paginate("camp", "inbox-1", MESSAGE, contacts, page_size=10, max_bytes=4096))

    assert all(len(page.to_json()) <= 4096 for page in pages)
    assert [page.page for page in pages] == list(range(len(pages)))
    assert sum(len(page.contacts) for page in pages) == 10
