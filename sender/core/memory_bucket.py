"""In-memory `BucketStore`: the Redis bucket's contract for one process, on an injected clock."""

from __future__ import annotations

from collections.abc import Callable

from sender.core.fair_share import Standing, grant_fair_batch
from sender.core.ratelimit import BatchAsk, BatchReply


class MemoryBucketStore:
    """Buckets and fair-share standings in dicts, reserved with the Lua script's math
    (`fair_share.grant_fair_batch`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tat_us: dict[str, int] = {}
        self._standings: dict[str, dict[str, Standing]] = {}
        self.calls = 0

    async def reserve_batch(self, inbox_id: str, ask: BatchAsk) -> BatchReply:
        """Reserve what `ask` wants of slots usable within its horizon of the clock's now."""
        self.calls += 1
        now_us = round(self._clock() * 1e6)
        got = grant_fair_batch(
            self._tat_us.get(inbox_id), self._standings.get(inbox_id, {}), now_us, ask
        )
        if got.new_tat_us is not None:
            self._tat_us[inbox_id] = got.new_tat_us
        self._standings[inbox_id] = got.standings
        return BatchReply(got.granted, got.first_minus_now_us / 1e6, got.retry_us / 1e6)
