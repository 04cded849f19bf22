"""Spec of the re-drive loop over a fake due source: pages per campaign, cleared only
once every page is published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from sender.core.page import Contact, Page
from sender.core.redrive import DueGroup, Redrive, RedriveConfig


@dataclass
class Group:
    campaign_id: str
    inbox_id: str
    message: dict[str, Any]
    contacts: list[Contact]


@dataclass
class FakeDue:
    """Hands out its groups once; `cleared` holds what a cleanly ended block cleared."""

    groups: list[Group]
    cleared: list[str] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def claim_due(self, limit: int) -> AsyncIterator[Sequence[DueGroup]]:
        self.limits.append(limit)
        groups, self.groups = self.groups, []
        try:
            yield groups
        except BaseException:
            self.groups = groups  # rolled back: still due
            raise
        self.cleared += [c.contact_id for g in groups for c in g.contacts]


def _contacts(*ids: str) -> list[Contact]:
    return [Contact(contact_id=i, to=f"+{n}", variables={}) for n, i in enumerate(ids)]


async def _no_nap(seconds: float) -> None:
    raise AssertionError("no nap expected")


async def test_due_contacts_go_out_as_one_page_per_campaign_and_are_cleared() -> None:
    due = FakeDue(
        [
            Group("a", "inbox-1", {"text": "x"}, _contacts("a-1", "a-2")),
            Group("b", "inbox-2", {"text": "y"}, _contacts("b-1")),
        ]
    )
    published: list[Page] = []

    async def publish(page: Page) -> None:
        published.append(page)

    sent = await Redrive(due, publish, _no_nap, RedriveConfig(batch=10)).run_once()
    assert sent == 3
    assert [(p.campaign_id, p.inbox_id, [c.contact_id for c in p.contacts]) for p in published] == [
        ("a", "inbox-1", ["a-1", "a-2"]),
        ("b", "inbox-2", ["b-1"]),
    ]
    assert due.cleared == ["a-1", "a-2", "b-1"]
    assert due.limits == [10]


async def test_pages_respect_the_page_size() -> None:
    due = FakeDue([Group("a", "i", {}, _contacts("1", "2", "3"))])
    published: list[Page] = []

    async def publish(page: Page) -> None:
        published.append(page)

    await Redrive(due, publish, _no_nap, RedriveConfig(batch=10, page_size=2)).run_once()
    assert [len(p.contacts) for p in published] == [2, 1]


async def test_a_failed_publish_clears_nothing_so_they_are_re_driven_later() -> None:
    due = FakeDue([Group("a", "i", {}, _contacts("1"))])

    async def publish(page: Page) -> None:
        raise ConnectionError("broker gone")

    with pytest.raises(ConnectionError):
        await Redrive(due, publish, _no_nap, RedriveConfig()).run_once()
    assert due.cleared == []
    assert len(due.groups) == 1


async def test_an_idle_pass_naps_for_the_poll_interval() -> None:
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        raise asyncio.CancelledError

    async def publish(page: Page) -> None:
        raise AssertionError("nothing to publish")

    with pytest.raises(asyncio.CancelledError):
        await Redrive(FakeDue([]), publish, nap, RedriveConfig(poll_s=0.5)).run_forever()
    assert naps == [0.5]
