"""The demo's inbox outage (DESIGN.md §11): a campaign whose inbox answers 503 for a while.

The outage campaign runs on an inbox of its own after the demo's first two campaigns
are done, so their counts, reasons and retries stay exactly what they were. Its breaker
settings are brisk (`BREAKER_SETTINGS`): it opens a fraction of a second into the
outage, probes once a second and closes on the first probe after the inbox is back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sender.core.page import Contact
from sender.core.ratelimit import Rate
from sender.runtime.consumer_app import ConsumerApp
from sender.testing import FakeInbox, Step

OUTAGE_CONTACTS = 1200
OUTAGE_RATE = Rate(300.0, 20)
OUTAGE_S = 3.0
OUTAGE_AFTER = OUTAGE_CONTACTS // 4
"""The inbox goes down once this many of the campaign's contacts are done."""
OUTAGE_PAGE_SIZE = 200

# At 300/s the window holds 50 attempts within 0.2 s of the outage; the first two
# campaigns' tail (6 always-503 contacts, 4 attempts each) never reaches 50 in a second.
BREAKER_SETTINGS: dict[str, object] = {
    "breaker_window_s": 1.0,
    "breaker_min_attempts": 50,
    "breaker_failure_ratio": 0.5,
    "breaker_cooldown_s": 1.0,
    "breaker_cooldown_max_s": 1.0,
}

_TRANSITIONS = "sender_breaker_transitions_total"


def outage_contacts() -> list[Contact]:
    """The outage campaign's contacts (ids no other demo campaign scripts)."""
    return [Contact(contact_id=f"o-{i:05d}", to=f"+5531{i:09d}") for i in range(OUTAGE_CONTACTS)]


@dataclass(frozen=True, slots=True)
class Transitions:
    """Breaker transitions the consumers counted, as the one that saw the most did."""

    opened: int
    closed: int

    @classmethod
    def read(cls, apps: list[ConsumerApp]) -> Transitions:
        """Each consumer counts what it sees; the largest count is the breaker's history."""

        def most(to: str) -> int:
            return max(int(app.metrics.value(_TRANSITIONS, to=to)) for app in apps)

        return cls(most("open"), most("closed"))

    def since(self, before: Transitions) -> Transitions:
        """The transitions after `before`."""
        return Transitions(self.opened - before.opened, self.closed - before.closed)


class Outage:
    """Takes one fake inbox down (503 to everything) and back up, and times it."""

    def __init__(self, inbox: FakeInbox, inbox_id: str) -> None:
        self._inbox = inbox
        self._inbox_id = inbox_id
        self._began = self._ended = 0.0
        inbox.set_inbox_default(inbox_id, Step(200, delay_s=0.002))

    def begin(self) -> None:
        """The inbox answers 503 from now on."""
        self._inbox.set_inbox_default(self._inbox_id, Step(503))
        self._began = time.monotonic()

    def end(self) -> None:
        """The inbox answers 200 again."""
        self._inbox.set_inbox_default(self._inbox_id, Step(200, delay_s=0.002))
        self._ended = time.monotonic()

    @property
    def seconds(self) -> float:
        """How long the inbox was down."""
        return self._ended - self._began

    def posts(self) -> int:
        """POSTs the inbox received while it was down (the breaker keeps this small)."""
        return sum(
            1
            for r in self._inbox.requests
            if r.inbox_id == self._inbox_id and self._began <= r.received_at < self._ended
        )
