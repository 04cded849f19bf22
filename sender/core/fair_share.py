"""Fair shares of one inbox between campaigns, across every pod (DESIGN.md §12): the math.

Every campaign has a *tag* at each inbox it sends to: the slots it has been granted there,
a virtual clock. One reservation asks for several campaigns at once (one pod's waiters),
and the slots that fit the bucket go one at a time to the asking campaign with the lowest
tag, but never to one a `quantum` or more ahead of the lowest tag of a campaign that
*another* reservation is waiting for. Waiting ("backlogged") means its last reservation,
within `ACTIVE_S`, came up short. So k campaigns with contacts waiting, on whichever pods,
each get 1/k of the inbox within about a quantum, and a campaign that wants less than its
share leaves the rest to the others (its reservations are not short, it holds no one back).

A campaign that starts waiting joins at the lowest waiting tag, so time spent idle banks
no credit, and one that ran ahead while nobody else waited is pulled back to a quantum
ahead of it. `split_slots` is the reference of the Lua script's split
(`sender/adapters/gcra_batch.lua`); the bucket itself is `ratelimit.grant_batch`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sender.core.ratelimit import (
    BatchAsk,
    Rate,
    batch_args_us,
    fitting_slots,
    grant_batch,
    retry_us,
    whole_us,
)

# A campaign counts as waiting for this long after its last short reservation. Pumps with
# waiters ask again at least every half reservation horizon, so this is several of their
# rounds; it is also how long a campaign paused mid-wait can hold the others back.
ACTIVE_S = 1.0
# Standings not renewed for this long are dropped (the campaign is long gone or idle).
FORGET_S = 60.0
# A reservation held back only by the quantum (the bucket had room) asks again this soon.
FAIR_RETRY_S = 0.05
# How far ahead of the slowest waiting campaign one may get, in seconds of the inbox's
# rate: what the pods' rounds need to keep the inbox busy, and the share's error bound.
QUANTUM_S = 0.1


def quantum_slots(rate: Rate) -> int:
    """The quantum in slots: `QUANTUM_S` of the rate, and never less than the burst."""
    return max(rate.burst, math.ceil(rate.per_sec * QUANTUM_S))


@dataclass(frozen=True, slots=True)
class Standing:
    """One campaign at one inbox: its tag, when it last reserved (µs), and whether it came
    up short then."""

    tag: int
    seen_us: int
    backlogged: bool


@dataclass(frozen=True, slots=True)
class FairSplit:
    """How many slots each campaign asked gets, and their new standings.

    `held_back`: some campaign got fewer than it wanted while the bucket still had room
    (only the quantum stopped it), so its pod should ask again in `FAIR_RETRY_S`.
    """

    granted: tuple[int, ...]
    standings: dict[str, Standing]
    held_back: bool


def live_standings(
    standings: Mapping[str, Standing], now_us: int, forget_us: int
) -> dict[str, Standing]:
    """The standings still remembered at `now_us` (the others are forgotten)."""
    return {cid: s for cid, s in standings.items() if now_us - s.seen_us <= forget_us}


def split_slots(
    standings: Mapping[str, Standing],
    wants: Sequence[tuple[str, int]],
    capacity: int,
    now_us: int,
    quantum: int,
    active_us: int,
) -> FairSplit:
    """Share up to `capacity` slots between `wants` (campaign, slots wanted), lowest tag
    first, ties in the order asked; `standings` are the remembered ones (`live_standings`)."""
    waiting = {
        cid: s.tag
        for cid, s in standings.items()
        if s.backlogged and now_us - s.seen_us <= active_us
    }
    lowest = min(waiting.values(), default=None)
    asked = {cid for cid, _ in wants}
    others = [tag for cid, tag in waiting.items() if cid not in asked]
    limit = min(others) + quantum if others else None
    tags = [_joining_tag(standings.get(cid), cid in waiting, lowest, quantum) for cid, _ in wants]
    granted = [0] * len(wants)
    for _ in range(capacity):
        best = _lowest_open(tags, granted, wants, limit)
        if best is None:
            break
        granted[best] += 1
        tags[best] += 1
    given = sum(granted)
    held_back = given < capacity and given < sum(want for _, want in wants)
    new = {cid: Standing(tags[i], now_us, granted[i] < want) for i, (cid, want) in enumerate(wants)}
    return FairSplit(tuple(granted), new, held_back)


def _joining_tag(standing: Standing | None, waiting: bool, lowest: int | None, quantum: int) -> int:
    """The tag a campaign asks with: its own while waiting, else raised to the lowest
    waiting tag; and never more than a quantum ahead of that."""
    if standing is None:
        tag = 0 if lowest is None else lowest
    elif waiting or lowest is None:
        tag = standing.tag
    else:
        tag = max(standing.tag, lowest)
    return tag if lowest is None else min(tag, lowest + quantum)


def _lowest_open(
    tags: list[int], granted: list[int], wants: Sequence[tuple[str, int]], limit: int | None
) -> int | None:
    """The index of the lowest-tagged campaign that still wants a slot and may have one."""
    best: int | None = None
    for i, (_, want) in enumerate(wants):
        may_have = granted[i] < want and (limit is None or tags[i] < limit)
        if may_have and (best is None or tags[i] < tags[best]):
            best = i
    return best


@dataclass(frozen=True, slots=True)
class FairBatch:
    """`grant_fair_batch`'s answer, in µs: the bucket's new tat (None: unchanged), the
    standings to remember, and the reply."""

    new_tat_us: int | None
    standings: dict[str, Standing]
    granted: tuple[int, ...]
    first_minus_now_us: int
    retry_us: int


def grant_fair_batch(
    tat_us: int | None, standings: Mapping[str, Standing], now_us: int, ask: BatchAsk
) -> FairBatch:
    """One reservation as the Lua script makes it: the split, then the bucket."""
    period_us, tolerance_us, horizon_us = batch_args_us(
        ask.period_s, ask.tolerance_s, ask.horizon_s
    )
    remembered = live_standings(standings, now_us, whole_us(FORGET_S))
    capacity = fitting_slots(tat_us, now_us, period_us, tolerance_us, horizon_us)
    split = split_slots(remembered, ask.wants, capacity, now_us, ask.quantum, whole_us(ACTIVE_S))
    given = sum(split.granted)
    got = grant_batch(tat_us, now_us, period_us, tolerance_us, horizon_us, given)
    if split.held_back:
        wait_us = whole_us(FAIR_RETRY_S)
    elif given < ask.wanted:
        after_us = now_us + got.first_minus_now_us + given * period_us  # the bucket's tat now
        wait_us = retry_us(after_us, now_us, period_us, tolerance_us, horizon_us)
    else:
        wait_us = 0
    return FairBatch(
        got.new_tat_us, remembered | split.standings, split.granted, got.first_minus_now_us, wait_us
    )
