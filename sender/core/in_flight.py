"""The contacts this process has claimed and not yet settled: the only leases it renews.

The page handler adds a contact when it claims it and removes it once its outcome is
committed (or its task died). The lease keeper renews exactly these, so a contact whose
task is gone keeps no lease: it lapses after `CLAIM_LEASE_MS`, and another delivery,
`resume` or `retry-failed` picks the contact up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

ContactKey = tuple[str, str]  # (campaign_id, contact_id)


class InFlight:
    """A multiset of (campaign id, contact id): two holders of one contact need two removals."""

    def __init__(self) -> None:
        self._held: Counter[ContactKey] = Counter()

    def add(self, campaign_id: str, contact_ids: Iterable[str]) -> None:
        """These contacts are now claimed by this process."""
        self._held.update((campaign_id, contact_id) for contact_id in contact_ids)

    def discard(self, campaign_id: str, contact_id: str) -> None:
        """One holder of this contact is done with it."""
        key = (campaign_id, contact_id)
        if self._held[key] <= 1:
            self._held.pop(key, None)
        else:
            self._held[key] -= 1

    def snapshot(self) -> tuple[list[str], list[str]]:
        """(campaign ids, contact ids) of every contact held, as two parallel lists."""
        keys = list(self._held)
        return [campaign for campaign, _ in keys], [contact for _, contact in keys]

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held
