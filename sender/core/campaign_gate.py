"""Campaign gate: may a campaign send now, and backoff sleeps that a halt cuts short.

The ledger is the truth, read through the Redis cache (`status_cache.py`); a local TTL
cache keeps even that off the hot path. `status_changed()` takes the pause/stop
notifications; if one is lost, sleeps still wake every `ABORT_POLL_MS` to re-read the
(TTL-bounded) status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sender.core.ports import CampaignStatus, StopCause
from sender.errors import DependencyUnavailable

StatusSource = Callable[[str], Awaitable[CampaignStatus | None]]


class CampaignGate:
    """Status lookups with a TTL cache, plus sleeps cut short by a halt or by shutdown."""

    def __init__(
        self,
        source: StatusSource,
        *,
        ttl_s: float,
        poll_s: float,
        monotonic: Callable[[], float],
        shutdown: asyncio.Event,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._poll_s = poll_s
        self._monotonic = monotonic
        self._shutdown = shutdown
        self._cache: dict[str, tuple[CampaignStatus | None, float]] = {}
        self._sleepers: dict[str, set[asyncio.Future[None]]] = {}
        self._notified: dict[str, int] = {}
        self._fetching: dict[str, asyncio.Future[CampaignStatus | None]] = {}

    async def blocker(self, campaign_id: str) -> StopCause | None:
        """Why the campaign may not start an attempt now, or None when it may."""
        if self._shutdown.is_set():
            return "shutdown"
        status = await self._status(campaign_id)
        if status is None or status == "running":
            return None
        return status

    async def sleep(
        self, campaign_id: str, seconds: float, until: asyncio.Future[Any] | None = None
    ) -> StopCause | None:
        """Sleep `seconds` (or until `until` is done) in slices of `ABORT_POLL_MS`.

        Returns the halt cause if the campaign is halted (or the process stops) meanwhile.
        """
        deadline = self._monotonic() + seconds
        while True:
            cause = await self.blocker(campaign_id)
            remaining = deadline - self._monotonic()
            if cause is not None or remaining <= 0 or (until is not None and until.done()):
                return cause
            await self._nap(campaign_id, min(remaining, self._poll_s), until)

    async def _nap(
        self, campaign_id: str, seconds: float, until: asyncio.Future[Any] | None
    ) -> None:
        """One slice: a bare future woken by a timer, a halt, shutdown or `until` (no tasks,
        as this runs for every token and backoff of every contact)."""
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        sleepers = self._sleepers.setdefault(campaign_id, set())
        sleepers.add(waker)
        timer = loop.call_later(seconds, _wake, waker)

        def on_done(_: asyncio.Future[Any]) -> None:
            _wake(waker)

        if until is not None:
            until.add_done_callback(on_done)
        try:
            await waker
        finally:
            timer.cancel()
            if until is not None:
                until.remove_done_callback(on_done)
            sleepers.discard(waker)
            if not sleepers:
                self._sleepers.pop(campaign_id, None)

    def wake_all(self) -> None:
        """Wake every sleeper (shutdown): each re-checks and sees the shutdown."""
        for sleepers in self._sleepers.values():
            for waker in list(sleepers):
                _wake(waker)

    def status_changed(self, campaign_id: str, status: CampaignStatus) -> None:
        """A notification: update the cache; on a halt, wake this campaign's sleepers now."""
        self._cache[campaign_id] = (status, self._monotonic() + self._ttl_s)
        self._notified[campaign_id] = self._notified.get(campaign_id, 0) + 1
        if status == "running":
            return
        for waker in list(self._sleepers.get(campaign_id, ())):
            _wake(waker)

    async def _status(self, campaign_id: str) -> CampaignStatus | None:
        cached = self._cache.get(campaign_id)
        now = self._monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        notified = self._notified.get(campaign_id, 0)
        try:
            status = await self._fetch_once(campaign_id)
        except DependencyUnavailable:
            # Neither Redis nor PostgreSQL answers: keep the last status we knew. Sends stop
            # anyway while outcomes cannot be written (OutcomeWriter.writable).
            return cached[0] if cached is not None else None
        if self._notified.get(campaign_id, 0) != notified:
            # A notification came while we read: it is newer than what we read.
            return self._cache[campaign_id][0]
        self._cache[campaign_id] = (status, now + self._ttl_s)
        return status

    async def _fetch_once(self, campaign_id: str) -> CampaignStatus | None:
        """One lookup per campaign at a time: contacts whose cache ran out together share it."""
        fetching = self._fetching.get(campaign_id)
        if fetching is None:
            fetching = asyncio.ensure_future(self._source(campaign_id))
            self._fetching[campaign_id] = fetching
            fetching.add_done_callback(lambda _: self._fetching.pop(campaign_id, None))
        return await asyncio.shield(fetching)


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)
