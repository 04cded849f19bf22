"""Small Protocols the contact loop and the page handler depend on; adapters live elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sender.core.page import Page
from sender.core.policy import AttemptResult

CampaignStatus = Literal["running", "paused", "stopped", "completed"]
ContactStatus = Literal["pending", "sending", "sent", "failed"]
StopCause = Literal["paused", "stopped", "completed", "shutdown"]
# `crashed`: the contact's loop raised; it stays `pending` for `resume` (see page_handler).
ReleaseCause = Literal[
    "paused", "stopped", "completed", "shutdown", "no_token", "deadline", "crashed"
]


@dataclass(frozen=True, slots=True)
class InboxRequest:
    """Everything one POST to the inbox API carries."""

    campaign_id: str
    contact_id: str
    inbox_id: str
    to: str
    message: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    # Monotonic time by which the first attempt's token must come, or the contact is released
    # `deadline` unstarted (the page's time slice, §12); None: RATE_LIMIT_MAX_WAIT_MS alone.
    first_token_by: float | None = field(default=None, compare=False)

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt of this contact."""
        return f"{self.campaign_id}:{self.contact_id}"


@dataclass(frozen=True, slots=True)
class ContactOutcome:
    """Where one contact ended up after this delivery of its page.

    `status` is `sent`, `failed` (with `reason`) or `pending` (released, with `release`).
    Build one with `sent`, `failed` or `released`.
    """

    campaign_id: str
    contact_id: str
    status: Literal["sent", "failed", "pending"]
    attempts: int = 0
    reason: str | None = None
    last_status_code: int | None = None
    release: ReleaseCause | None = None

    @classmethod
    def sent(
        cls, campaign_id: str, contact_id: str, *, attempts: int, last_status_code: int | None
    ) -> ContactOutcome:
        """The inbox accepted the contact on attempt number `attempts`."""
        return cls(campaign_id, contact_id, "sent", attempts, None, last_status_code)

    @classmethod
    def failed(
        cls,
        campaign_id: str,
        contact_id: str,
        *,
        attempts: int,
        reason: str,
        last_status_code: int | None,
    ) -> ContactOutcome:
        """The contact failed for good with the ledger's `reason`."""
        return cls(campaign_id, contact_id, "failed", attempts, reason, last_status_code)

    @classmethod
    def released(
        cls,
        campaign_id: str,
        contact_id: str,
        cause: ReleaseCause,
        *,
        attempts: int = 0,
        last_status_code: int | None = None,
    ) -> ContactOutcome:
        """The contact goes back to `pending` (its lease cleared) because of `cause`."""
        return cls(
            campaign_id, contact_id, "pending", attempts, None, last_status_code, release=cause
        )


class Dispatcher(Protocol):
    """Makes one attempt; never raises for inbox or network failures."""

    async def send(self, request: InboxRequest) -> AttemptResult: ...


@dataclass(frozen=True, slots=True)
class TokenReply:
    """A limiter's answer: the token is yours once `wait_s` has passed (limiters never refuse)."""

    wait_s: float


class RateLimiter(Protocol):
    """Per-inbox tokens shared by every attempt. It never sleeps past a slot: the caller does."""

    def reserve(self, inbox_id: str, campaign_id: str = "") -> Awaitable[TokenReply]:
        """Queue for the next token; the answer comes once a slot is reserved.

        An inbox's slots are shared round-robin between the campaigns waiting (§12).

        The answer may never come (no slot yet, a store that cannot be reached): callers
        bound the wait themselves (`RATE_LIMIT_MAX_WAIT_MS`) and cancel what they stop
        waiting for, which takes them out of the queue.
        """
        ...


class CampaignGate(Protocol):
    """Says whether a campaign may send now; its sleeps end early on a pause, stop or shutdown."""

    async def blocker(self, campaign_id: str) -> StopCause | None:
        """Why the campaign may not start an attempt now, or None when it may."""
        ...

    async def sleep(
        self, campaign_id: str, seconds: float, until: asyncio.Future[Any] | None = None
    ) -> StopCause | None:
        """Sleep `seconds` or until `until` is done; return early with the halt cause."""
        ...


class OutcomeSink(Protocol):
    """Takes outcomes and commits them in batches."""

    def submit(self, outcome: ContactOutcome) -> asyncio.Future[None]:
        """Queue `outcome`; return a future done once it is committed."""
        ...

    @property
    def writable(self) -> asyncio.Event:
        """Set while outcomes can be committed; new sends wait while it is clear."""
        ...


@dataclass(frozen=True, slots=True)
class Admission:
    """The ledger's answer when a page arrives."""

    campaign_status: CampaignStatus
    claimed: Sequence[str]
    held_elsewhere: Sequence[str]


class LedgerPort(Protocol):
    """What page handling needs of the ledger."""

    async def admit(self, page: Page, owner: str, lease_s: float) -> Admission:
        """Register the page's campaign and contacts; claim the claimable ones."""
        ...

    async def reclaim(
        self, campaign_id: str, contact_ids: Sequence[str], owner: str, lease_s: float
    ) -> tuple[list[str], list[str]]:
        """Claim those whose lease lapsed; return (claimed, still held elsewhere)."""
        ...


BackgroundJob = Callable[[], Coroutine[Any, Any, None]]


class Spawn(Protocol):
    """Starts a background job under supervision (`sender.runtime.supervisor.Supervisor`)."""

    def __call__(self, name: str, job: BackgroundJob) -> asyncio.Task[None]:
        """Run `job()` in a task named `name`, restarting it if it raises."""
        ...


def spawn_unsupervised(name: str, job: BackgroundJob) -> asyncio.Task[None]:
    """A plain task, for tests and tools that run no supervisor: a crash ends it."""
    return asyncio.create_task(job(), name=name)
