"""In-memory `BucketStore`: the Redis bucket's contract for one process, on an injected clock."""

from __future__ import annotations

from collections.abc import Callable

from sender.core.ratelimit import BatchReply, batch_args_us, grant_batch


class MemoryBucketStore:
    """Buckets in a dict, reserved with the same math as the Lua script (`grant_batch`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tat_us: dict[str, int] = {}
        self.calls = 0

    async def reserve_batch(
        self, inbox_id: str, period_s: float, tolerance_s: float, horizon_s: float, wanted: int
    ) -> BatchReply:
        """Reserve up to `wanted` slots usable within `horizon_s` of the clock's now."""
        self.calls += 1
        now_us = round(self._clock() * 1e6)
        period_us, tolerance_us, horizon_us = batch_args_us(period_s, tolerance_s, horizon_s)
        got = grant_batch(
            self._tat_us.get(inbox_id), now_us, period_us, tolerance_us, horizon_us, wanted
        )
        if got.new_tat_us is not None:
            self._tat_us[inbox_id] = got.new_tat_us
        return BatchReply(got.granted, got.first_minus_now_us / 1e6, got.retry_us / 1e6)
