"""Cutting a campaign's contacts into pages that fit the page limits (pure)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from sender.core.page import Contact, Page
from sender.errors import OversizeContact

# Room kept for the page number, which grows as pages are cut.
_PAGE_NUMBER_ROOM = 20


def contact_budget(campaign_id: str, inbox_id: str, message: dict[str, Any], max_bytes: int) -> int:
    """Bytes one contact's JSON may take so that its page alone fits in `max_bytes`."""
    empty = {
        "campaign_id": campaign_id,
        "page": 0,
        "inbox_id": inbox_id,
        "message": message,
        "contacts": [],
    }
    return max_bytes - len(orjson.dumps(empty)) - _PAGE_NUMBER_ROOM


def fields_bytes(contact_id: str, to: str, variables: dict[str, str]) -> int:
    """Size of one contact, given as its fields, in a page's JSON."""
    return len(orjson.dumps({"contact_id": contact_id, "to": to, "variables": variables}))


def paginate(
    campaign_id: str,
    inbox_id: str,
    message: dict[str, Any],
    contacts: Sequence[Contact],
    *,
    page_size: int,
    max_bytes: int,
) -> Iterator[Page]:
    """Cut contacts into pages of at most `page_size` contacts and `max_bytes` bytes.

    Raises `OversizeContact` rather than yield a page the consumer would dead-letter.
    """
    number = 0
    for start in range(0, len(contacts), page_size):
        for page in _fit(
            Page(
                campaign_id=campaign_id,
                page=number,
                inbox_id=inbox_id,
                message=message,
                contacts=list(contacts[start : start + page_size]),
            ),
            max_bytes,
        ):
            yield page.model_copy(update={"page": number})
            number += 1


def _fit(page: Page, max_bytes: int) -> Iterator[Page]:
    """Split a page in halves until every part is small enough."""
    size = len(page.to_json())
    if size <= max_bytes:
        yield page
        return
    if len(page.contacts) == 1:
        raise OversizeContact(page.contacts[0].contact_id, size, max_bytes)
    half = len(page.contacts) // 2
    yield from _fit(page.with_contacts(page.contacts[:half]), max_bytes)
    yield from _fit(page.with_contacts(page.contacts[half:]), max_bytes)


# contact_id, to, variables: what a page carries of a contact
ContactFields = tuple[str, str, dict[str, str]]


def contact_parts(contacts: Sequence[ContactFields]) -> list[bytes]:
    """Each contact's page JSON followed by a comma, for `page_bodies` (width 1)."""
    return [orjson.dumps({"contact_id": c, "to": t, "variables": v}) + b"," for c, t, v in contacts]


def page_bodies(
    campaign_id: str,
    inbox_id: str,
    message: dict[str, Any],
    parts: Sequence[bytes],
    width: int,
    *,
    first_page: int,
    page_size: int,
    max_bytes: int,
) -> list[bytes]:
    """The wire form of `paginate`'s pages for already-validated contacts, numbered from
    `first_page`, joined from ready JSON: contact i is `parts[i*width:(i+1)*width]`, each
    contact's JSON followed by a comma (millions at a start: no object per contact)."""
    head = {"campaign_id": campaign_id, "page": 0, "inbox_id": inbox_id, "message": message}
    count = len(parts) // width
    bodies: list[bytes] = []
    for start in range(0, count, page_size):
        rows = _Rows(head, parts, width)
        bodies += rows.fit(
            start, min(start + page_size, count), first_page + len(bodies), max_bytes
        )
    return bodies


class _Rows:
    """Pages cut from ready contact JSON."""

    def __init__(self, head: dict[str, Any], parts: Sequence[bytes], width: int) -> None:
        self._head, self._parts, self._width = head, parts, width

    def fit(self, lo: int, hi: int, number: int, max_bytes: int) -> list[bytes]:
        """Pages of contacts lo..hi numbered from `number`, halving until each fits."""
        body = self._body(lo, hi, number)
        if hi - lo == 1 or len(body) <= max_bytes:
            return [body]
        mid = (lo + hi) // 2
        left = self.fit(lo, mid, number, max_bytes)
        return left + self.fit(mid, hi, number + len(left), max_bytes)

    def _body(self, lo: int, hi: int, number: int) -> bytes:
        head = orjson.dumps({**self._head, "page": number})[:-1]
        contacts = b"".join(self._parts[lo * self._width : hi * self._width])[:-1]
        return head + b',"contacts":[' + contacts + b"]}"
