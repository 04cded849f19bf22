"""The rate limiter: per inbox, one pump reserves slots in batches for every local waiter.

Waiters queue per campaign. One `BucketStore.reserve_batch` call asks for as many slots
as each campaign has waiters (within a short horizon); the store shares them between
campaigns by `fair_share.split_slots`, with every pod's campaigns in view (DESIGN.md §12),
and the pump hands each campaign's slots to its waiters round-robin between campaigns.
Each waiter learns its slot and sleeps until then, so nobody polls and a busy process
makes far fewer than one store call per token. Slots are reserved at
most `RESERVATION_HORIZON_S` ahead, so a rate change (raised or lowered) shows at the
inbox within a second. When no slot fits, the pump sleeps until half the horizon is free.

A store that cannot be reached (`DependencyUnavailable`) grants nothing (fail closed): the
pump asks again every `UNAVAILABLE_RETRY_S`, and waiters wait until their caller's bound
and leave the queue. Anything else a pump raises is a crash for its supervisor (`spawn`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping

from sender.core.fair_share import quantum_slots
from sender.core.ports import Spawn, TokenReply, spawn_unsupervised
from sender.core.ratelimit import (
    BatchAsk,
    BatchReply,
    BucketStore,
    Rate,
    late_limit_s,
    tolerance_s,
)
from sender.errors import DependencyUnavailable

log = logging.getLogger(__name__)

RateLookup = Callable[[str], Rate]
Sleep = Callable[[float], Awaitable[None]]
# Spread between grant and arrival at the inbox that the bucket absorbs (ratelimit.tolerance_s).
SEND_JITTER_ALLOWANCE_S = 0.1
# How far ahead slots are reserved; bounds how long a rate change takes to show.
RESERVATION_HORIZON_S = 0.5
# While the store is unreachable the pump asks again this often (and grants nothing).
UNAVAILABLE_RETRY_S = 0.25
# Shortest pause before asking again when a batch came up short.
_MIN_RETRY_S = 0.001


class TokenPump:
    """Per-inbox GCRA over a `BucketStore`: with Redis, N processes never exceed a rate."""

    def __init__(
        self,
        store: BucketStore,
        rates: RateLookup,
        *,
        jitter_allowance_s: float = SEND_JITTER_ALLOWANCE_S,
        horizon_s: float = RESERVATION_HORIZON_S,
        sleep: Sleep = asyncio.sleep,
        spawn: Spawn = spawn_unsupervised,
    ) -> None:
        self._store = store
        self._rates = rates
        self._jitter_allowance_s = jitter_allowance_s
        self._horizon_s = horizon_s
        self._sleep = sleep
        self._spawn = spawn
        self._waiters: dict[str, CampaignQueues] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self.calls = 0

    def reserve(self, inbox_id: str, campaign_id: str = "") -> asyncio.Future[TokenReply]:
        """Queue for a slot; the reply's `wait_s` is how long from its arrival until it is yours.

        Slots are shared fairly between the campaigns queued (here and on other pods),
        first-come within a campaign.

        The future is answered only with a slot, never refused: the caller bounds the wait
        (as `ContactSender` does) and cancels the future to leave the queue.
        A plain future, not a task, because every attempt of every contact asks.
        """
        slot: asyncio.Future[TokenReply] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(inbox_id, CampaignQueues()).add(campaign_id, slot)
        pump = self._pumps.get(inbox_id)
        if pump is None or pump.done():  # done: gave up, its callback has not run yet
            self._start_pump(inbox_id)
        return slot

    def waiting(self, inbox_id: str, campaign_id: str) -> int:
        """How many of the campaign's contacts here are queued for a slot at the inbox."""
        queues = self._waiters.get(inbox_id)
        return 0 if queues is None else queues.waiting(campaign_id)

    async def close(self) -> None:
        """Stop the pumps (waiters still queued get no token)."""
        pumps = list(self._pumps.values())
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    def _start_pump(self, inbox_id: str) -> None:
        """One supervised pump per inbox: a crash restarts it with backoff and the queued
        waiters are served by the next run; if it gives up, the next `reserve` starts one."""
        task = self._spawn(f"rate-pump:{inbox_id}", lambda: self._pump(inbox_id))
        self._pumps[inbox_id] = task
        task.add_done_callback(lambda done: self._forget_pump(inbox_id, done))

    def _forget_pump(self, inbox_id: str, task: asyncio.Task[None]) -> None:
        if self._pumps.get(inbox_id) is task:
            del self._pumps[inbox_id]

    async def _pump(self, inbox_id: str) -> None:
        queue = self._waiters[inbox_id]
        while True:
            wants = queue.wants()
            if not wants:
                # At once, not in a done callback: a `reserve` before that would find a
                # pump about to end and queue behind it for nothing.
                self._pumps.pop(inbox_id, None)
                return
            retry_s = await self._reserve(inbox_id, queue, wants)
            if retry_s > 0:
                await self._sleep(retry_s)

    async def _reserve(
        self, inbox_id: str, queue: CampaignQueues, wants: tuple[tuple[str, int], ...]
    ) -> float:
        """Reserve for `wants` and hand the slots out; how long to pause if short."""
        rate = self._rates(inbox_id)
        tolerance = tolerance_s(rate, self._jitter_allowance_s)
        ask = BatchAsk(rate.period_s, tolerance, self._horizon_s, quantum_slots(rate), wants)
        self.calls += 1
        try:
            reply = await self._store.reserve_batch(inbox_id, ask)
        except DependencyUnavailable as error:
            log.warning("rate limiter: store unavailable, no token", extra={"error": str(error)})
            return UNAVAILABLE_RETRY_S
        granted = {campaign_id: n for (campaign_id, _), n in zip(wants, reply.granted, strict=True)}
        late_s = late_limit_s(rate, self._jitter_allowance_s)
        queue.hand_out(_slot_waits(reply, rate, tolerance), granted, late_s)
        return max(reply.retry_s, _MIN_RETRY_S) if reply.total < ask.wanted else 0.0


def _slot_waits(reply: BatchReply, rate: Rate, tolerance: float) -> list[float]:
    """Slot i (from 1) may be used at first_tat + i·T - tolerance."""
    ahead_s = reply.first_tat_minus_now_s - tolerance
    return [max(0.0, ahead_s + (i + 1) * rate.period_s) for i in range(reply.total)]


class CampaignQueues:
    """One inbox's waiters, first-come per campaign, served round-robin between campaigns."""

    def __init__(self) -> None:
        # Rotation order: the campaign served next comes first; one served moves to the end.
        self._queues: OrderedDict[str, deque[asyncio.Future[TokenReply]]] = OrderedDict()

    def add(self, campaign_id: str, waiter: asyncio.Future[TokenReply]) -> None:
        """Queue `waiter` behind its campaign's others (a new campaign joins the rotation last)."""
        self._queues.setdefault(campaign_id, deque()).append(waiter)

    def waiting(self, campaign_id: str) -> int:
        """The campaign's waiters still there."""
        return sum(1 for waiter in self._queues.get(campaign_id, ()) if not waiter.done())

    def wants(self) -> tuple[tuple[str, int], ...]:
        """Each campaign's waiters still there (some gave up: timeout, halt), in the order
        they are served. Campaigns left empty leave the rotation; one whose last waiters
        gave up is asked for once with 0, so the store stops counting it as waiting."""
        wanted: list[tuple[str, int]] = []
        for campaign_id, queue in list(self._queues.items()):
            live = sum(1 for waiter in queue if not waiter.done())
            if live == 0:
                del self._queues[campaign_id]
                if queue:
                    wanted.append((campaign_id, 0))
                continue
            if live < len(queue):
                self._queues[campaign_id] = deque(w for w in queue if not w.done())
            wanted.append((campaign_id, live))
        return tuple(wanted)

    def hand_out(
        self, waits: list[float], granted: Mapping[str, int], late_limit_s: float = math.inf
    ) -> None:
        """Each slot, in order, to the longest waiter of the next campaign in the rotation
        that still has slots granted; a slot nobody is left for goes unused."""
        left = dict(granted)
        for wait_s in waits:
            waiter = self._next_waiter(left)
            if waiter is None:
                return
            waiter.set_result(TokenReply(wait_s, late_limit_s))

    def _next_waiter(self, left: dict[str, int]) -> asyncio.Future[TokenReply] | None:
        for campaign_id, queue in self._queues.items():
            if left.get(campaign_id, 0) <= 0:
                continue
            while queue and queue[0].done():  # gave up while we asked the store
                queue.popleft()
            if not queue:
                continue
            left[campaign_id] -= 1
            self._queues.move_to_end(campaign_id)
            return queue.popleft()
        return None
