"""Auto-pause (DESIGN §11): a campaign whose recent final outcomes are mostly `failed`
pauses itself, on every pod, as `pause` does.

    outcome batch committed  ->  notice(): campaigns with a failure in it
    watch task               ->  last N final outcomes from the ledger (all pods' outcomes)
                             ->  pause_reason() (pure)  ->  ledger running -> paused
                             ->  Redis announce (every pod stops at once)  ->  event

Only a failure can push a window over the ratio, so campaigns whose batch had none cost
nothing. The window must be full (N outcomes since the last resume): a small campaign
with a few failures never pauses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sender.core.events import CampaignAutoPaused, EventBus
from sender.core.ports import CampaignStatus, ContactOutcome
from sender.errors import DependencyUnavailable

log = logging.getLogger(__name__)

_LEDGER_DOWN_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class AutoPausePolicy:
    """`AUTO_PAUSE_WINDOW` (0 disables) and `AUTO_PAUSE_FAILURE_RATIO`."""

    window: int = 200
    failure_ratio: float = 0.5

    @property
    def enabled(self) -> bool:
        """False when `AUTO_PAUSE_WINDOW=0`."""
        return self.window > 0


@dataclass(frozen=True, slots=True)
class OutcomeWindow:
    """A campaign's last final outcomes: how many, how many failed, the commonest reason."""

    outcomes: int
    failed: int
    top_reason: str | None


def pause_reason(window: OutcomeWindow, policy: AutoPausePolicy) -> str | None:
    """The `status_reason` when the window should pause the campaign, else None."""
    if not policy.enabled or window.outcomes < policy.window:
        return None
    if window.failed < policy.failure_ratio * policy.window:
        return None
    return (
        f"auto-paused: {window.failed} of the last {window.outcomes} contacts failed"
        f" ({window.top_reason or 'unknown'})"
    )


class OutcomeJudge(Protocol):
    """The ledger side: read a campaign's window, pause it if it still runs."""

    async def recent_outcomes(self, campaign_id: str, window: int) -> OutcomeWindow:
        """Its last `window` final outcomes (since its last resume)."""
        ...

    async def pause_itself(self, campaign_id: str, reason: str) -> bool:
        """Running -> paused with `reason`; False when it was not running (or another pod won)."""
        ...


Announce = Callable[[str, CampaignStatus], Awaitable[bool]]


class AutoPauseWatch:
    """Judges the campaigns that just got failures, one at a time, in a background task."""

    def __init__(
        self,
        judge: OutcomeJudge,
        announce: Announce,
        events: EventBus,
        policy: AutoPausePolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sleep = sleep
        self._judge = judge
        self._announce = announce
        self._events = events
        self._policy = policy
        self._suspects: set[str] = set()
        self._woken = asyncio.Event()

    def notice(self, outcomes: Iterable[ContactOutcome]) -> None:
        """After a batch committed: remember the campaigns with a failure in it."""
        if not self._policy.enabled:
            return
        failed = {o.campaign_id for o in outcomes if o.status == "failed"}
        if failed:
            self._suspects |= failed
            self._woken.set()

    async def run_forever(self) -> None:
        """Judge suspects as they come (run it under the supervisor)."""
        while True:
            await self._woken.wait()
            self._woken.clear()
            suspects, self._suspects = self._suspects, set()
            try:
                for campaign_id in sorted(suspects):
                    await self.judge(campaign_id)
                    suspects.discard(campaign_id)
            except DependencyUnavailable as error:
                log.warning("auto-pause check postponed", extra={"error": str(error)})
                self._suspects |= suspects
                self._woken.set()
                await self._sleep(_LEDGER_DOWN_RETRY_S)

    async def judge(self, campaign_id: str) -> str | None:
        """Pause the campaign if its window says so; return the reason when this pod did."""
        window = await self._judge.recent_outcomes(campaign_id, self._policy.window)
        reason = pause_reason(window, self._policy)
        if reason is None or not await self._judge.pause_itself(campaign_id, reason):
            return None
        await self._announce(campaign_id, "paused")
        log.warning(reason, extra={"campaign_id": campaign_id})
        self._events.emit(CampaignAutoPaused(campaign_id, reason))
        return reason
