"""Cutting a campaign's contacts into pages that fit the page limits (pure)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sender.core.page import Contact, Page


def paginate(
    campaign_id: str,
    inbox_id: str,
    message: dict[str, Any],
    contacts: Sequence[Contact],
    *,
    page_size: int,
    max_bytes: int,
) -> Iterator[Page]:
    """Cut contacts into pages of at most `page_size` contacts and `max_bytes` bytes."""
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
    if len(page.to_json()) <= max_bytes or len(page.contacts) == 1:
        yield page
        return
    half = len(page.contacts) // 2
    yield from _fit(page.with_contacts(page.contacts[:half]), max_bytes)
    yield from _fit(page.with_contacts(page.contacts[half:]), max_bytes)
