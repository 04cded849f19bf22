"""Small Protocols the contact loop and the page handler depend on; adapters live elsewhere."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sender.core.page import Page
from sender.core.policy import AttemptResult, EarlierRounds

CampaignStatus = Literal["running", "paused", "stopped", "completed"]
ContactStatus = Literal["pending", "sending", "sent", "failed"]
StopCause = Literal["paused", "stopped", "completed", "shutdown"]
# `crashed`: the contact's loop raised; it stays `pending` for `resume` (see page_handler).
# `inbox_held`: its inbox stayed held (breaker, Retry-After, operator) for a whole wait.
# `deferred`: its round is used up; it waits for `next_attempt_at` and the re-drive.
ReleaseCause = Literal[
    "paused",
    "stopped",
    "completed",
    "shutdown",
    "no_token",
    "deadline",
    "crashed",
    "inbox_held",
    "deferred",
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
    # A deferral: seconds until the next round, and this round's codes for the ledger.
    defer_s: float | None = None
    round_codes: tuple[str, ...] = ()

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

    @classmethod
    def deferred(
        cls,
        campaign_id: str,
        contact_id: str,
        *,
        codes: Sequence[str],
        delay_s: float,
        last_status_code: int | None,
        attempts: int | None = None,
    ) -> ContactOutcome:
        """The round is used up: `pending` again, due in `delay_s`, its `codes` kept.

        `attempts` defaults to one per code; failed breaker probes add attempts, no code.
        """
        return cls(
            campaign_id,
            contact_id,
            "pending",
            len(codes) if attempts is None else attempts,
            None,
            last_status_code,
            release="deferred",
            defer_s=delay_s,
            round_codes=tuple(codes),
        )


class RoundHistory(Protocol):
    """The ledger's record of a contact's earlier deferred rounds."""

    async def earlier_rounds(self, campaign_id: str, contact_id: str) -> EarlierRounds:
        """How many rounds it had before this one, and their attempts' codes."""
        ...


class Dispatcher(Protocol):
    """Makes one attempt; never raises for inbox or network failures."""

    async def send(self, request: InboxRequest) -> AttemptResult: ...


@dataclass(frozen=True, slots=True)
class TokenReply:
    """A limiter's answer: the token is yours once `wait_s` has passed (limiters never refuse).

    It is stale once `late_limit_s` more have passed: a token used that late (a stalled
    process) would land at the inbox together with later ones, so the caller asks again.
    """

    wait_s: float
    late_limit_s: float = math.inf


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


@dataclass(frozen=True, slots=True)
class Probe:
    """This attempt is the one probe of an inbox whose breaker cooled down."""

    inbox_id: str
    claim: str
    """The claim's token (its Redis value), so only its owner ends it."""
    gen: int
    """The breaker generation it was claimed in (compare-and-set)."""
    cooldown_s: float


class InboxGatePort(Protocol):
    """Says whether an inbox may be sent to now (breaker, Retry-After and operator holds)."""

    def clear(self, inbox_id: str) -> bool:
        """True when the inbox is known to be clear right now (no I/O: the hot path)."""
        ...

    async def held(self, inbox_id: str) -> bool:
        """True when something holds the inbox now (its state re-read only when stale)."""
        ...

    async def admit(self, campaign_id: str, inbox_id: str) -> Probe | ReleaseCause | None:
        """Wait until the inbox may be sent to: None (go), a `Probe` (go, as the probe), or
        why the contact is released (a halt, or `inbox_held` after a whole wait)."""
        ...

    def record(self, inbox_id: str, result: AttemptResult) -> None:
        """Count an ordinary attempt's result toward the inbox's breaker window."""
        ...

    async def probe_finished(self, probe: Probe, result: AttemptResult) -> None:
        """Close or reopen the breaker from the probe's result."""
        ...

    async def probe_abandoned(self, probe: Probe) -> None:
        """The probe never went out (no token, a halt): another may be claimed."""
        ...

    async def retry_after(self, inbox_id: str, result: AttemptResult) -> None:
        """Hold the inbox on every pod when `result` carries a `Retry-After` that holds it."""
        ...


class OpenInboxGate:
    """An inbox gate that never holds (unit tests, tools without Redis)."""

    def clear(self, inbox_id: str) -> bool:
        """Always clear."""
        return True

    async def held(self, inbox_id: str) -> bool:
        """Never held."""
        return False

    async def admit(self, campaign_id: str, inbox_id: str) -> Probe | ReleaseCause | None:
        """Always go."""
        return None

    def record(self, inbox_id: str, result: AttemptResult) -> None:
        """Nothing is counted."""

    async def probe_finished(self, probe: Probe, result: AttemptResult) -> None:
        """There are no probes."""

    async def probe_abandoned(self, probe: Probe) -> None:
        """There are no probes."""

    async def retry_after(self, inbox_id: str, result: AttemptResult) -> None:
        """Nothing is held."""


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
