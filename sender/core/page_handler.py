"""One page: admit it to the ledger, run its claimed contacts, wait for their commits.

The handler never touches RabbitMQ: it returns a `PageResult` and the consumer settles
the message from it, in one place.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from sender.core.in_flight import InFlight
from sender.core.page import Contact, Page
from sender.core.policy import doubling_delay
from sender.core.ports import ContactOutcome, InboxRequest, LedgerPort, OutcomeSink, ReleaseCause
from sender.core.waits import wait_any
from sender.errors import DependencyUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PageDone:
    """Every claimed contact's outcome is committed: ack."""


@dataclass(frozen=True, slots=True)
class PageContinues:
    """What ran is committed; `rest` still has work (deadline, shutdown, leases held elsewhere)."""

    rest: Page


@dataclass(frozen=True, slots=True)
class PageDead:
    """The page can never be processed: dead-letter it with `reason`."""

    reason: str


@dataclass(frozen=True, slots=True)
class PageCrashed:
    """Handling raised unexpectedly: give the page back (RabbitMQ counts it toward the limit)."""


PageResult = PageDone | PageContinues | PageDead | PageCrashed


T = TypeVar("T")
_LEDGER_RETRY_S = (0.2, 5.0)

# A page's time slice (§12): after it, contacts not yet started (nor granted their first
# token) go back to the queue's tail as a continuation page, so pages of every campaign
# take turns in the queue. docs/OPERATIONS.md says how it meets the page size and prefetch.
PAGE_SLICE_S = 1.0

# Released contacts that this page sends out again; paused/stopped ones wait for `resume`,
# and so do `crashed` ones: sending a contact whose loop raised straight out again in a
# continuation page would loop hot on a bug, with no delivery limit to end it.
# `inbox_held` ones went through a whole wait first, so a held inbox never loops hot.
_GOES_OUT_AGAIN: frozenset[str | None] = frozenset(
    {"shutdown", "no_token", "deadline", "inbox_held"}
)

# A page delivered while a page's worth (`contacts_per_page`) of its campaign's contacts
# already waits here for tokens at its inbox would only queue behind them, holding a
# prefetch slot that a page of another campaign could use. It waits this long for them to
# thin out, then goes back to the queue's tail untouched (nothing claimed), so the queue
# keeps turning while the contacts already waiting use the campaign's tokens (§12).
CROWDED_PARK_S = 0.25
_CROWD_POLL_S = 0.02

Backlog = Callable[[], Awaitable[bool]]
"""Whether other pages wait in the queue (a page yields its slice only then)."""

Crowd = Callable[[str, str], int]
"""How many contacts of a campaign (second argument) wait for a token at an inbox (first)
in this process (`TokenPump.waiting`)."""


def nobody_waiting(inbox_id: str, campaign_id: str) -> int:
    """The default `Crowd`: no contact waits, so no page is parked."""
    return 0


async def always_backlog() -> bool:
    """The default `Backlog`: assume pages wait, so every slice is yielded."""
    return True


Nap = Callable[[asyncio.Event, float], Awaitable[None]]
"""Sleep `seconds`, cut short once the event (shutdown) is set."""


async def interruptible_nap(shutdown: asyncio.Event, seconds: float) -> None:
    """The real `Nap`: a timer raced against `shutdown`."""
    await wait_any(shutdown, seconds=seconds)


class SendsContacts(Protocol):
    """Runs one contact to its outcome (`ContactSender`)."""

    async def send(self, request: InboxRequest) -> ContactOutcome: ...


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    """Timing knobs of page handling."""

    owner: str
    lease_s: float
    deadline_s: float
    contacts_per_page: int
    held_poll_s: float = 1.0
    slice_s: float | None = None  # None: a page runs until done or its deadline


class PageHandler:
    """Runs pages; each page runs up to `contacts_per_page` contacts at once.

    Contacts waiting for a rate-limit token hold only their page's budget, not the
    process-wide HTTP slots (those are taken around each attempt by `ContactSender`), so
    a throttled inbox never starves a fast one.
    """

    def __init__(
        self,
        *,
        ledger: LedgerPort,
        sender: SendsContacts,
        outcomes: OutcomeSink,
        config: HandlerConfig,
        monotonic: Callable[[], float],
        shutdown: asyncio.Event,
        nap: Nap = interruptible_nap,
        in_flight: InFlight | None = None,
        backlog: Backlog = always_backlog,
        crowd: Crowd = nobody_waiting,
    ) -> None:
        self._backlog = backlog
        self._crowd = crowd
        # Pages being admitted and started, per (inbox, campaign): their contacts are not
        # queued for tokens yet, so `crowd` does not count them.
        self._starting: Counter[tuple[str, str]] = Counter()
        self._ledger = ledger
        self._sender = sender
        self._outcomes = outcomes
        self._config = config
        self._monotonic = monotonic
        self._shutdown = shutdown
        self._nap = nap
        self._in_flight = in_flight if in_flight is not None else InFlight()

    async def handle(self, page: Page) -> PageResult:
        """Process `page` and say how to settle it."""
        cfg = self._config
        contended = cfg.slice_s is not None and await self._waiting_pages()
        if contended and await self._crowded_out(page):
            return PageContinues(page)
        slice_end = None if cfg.slice_s is None else self._monotonic() + cfg.slice_s
        run = _PageRun(
            page,
            sender=self._sender,
            outcomes=self._outcomes,
            monotonic=self._monotonic,
            shutdown=self._shutdown,
            slots=asyncio.Semaphore(cfg.contacts_per_page),
            deadline=self._monotonic() + cfg.deadline_s,
            in_flight=self._in_flight,
            slice_end=slice_end,
            first_token_by=self._first_token_by(page, slice_end, contended),
            slice_s=cfg.slice_s,
            backlog=self._waiting_pages,
        )
        starting = self._starting_here(page)
        try:
            return await self._handle(page, run, starting)
        finally:
            starting()
            run.untrack_all()  # whatever is left (the handling raised) keeps no lease

    async def _handle(self, page: Page, run: _PageRun, started: Callable[[], None]) -> PageResult:
        cfg = self._config
        admission = await self._while_ledger_down(
            partial(self._ledger.admit, page, cfg.owner, cfg.lease_s)
        )
        if admission.campaign_status != "running":
            log.info(
                "page skipped: campaign %s",
                admission.campaign_status,
                extra={"campaign_id": page.campaign_id, "page": page.page},
            )
            return PageDone()
        await run.start(admission.claimed, on_full=started)
        started()
        held = list(admission.held_elsewhere)
        while held and not run.must_stop():
            await self._nap(self._shutdown, min(cfg.held_poll_s, run.time_left()))
            claimed, held = await self._while_ledger_down(
                partial(self._ledger.reclaim, page.campaign_id, held, cfg.owner, cfg.lease_s)
            )
            await run.start(claimed)
        outcomes = await run.finish()
        released = [o.contact_id for o in outcomes if o.release in _GOES_OUT_AGAIN]
        rest = run.unstarted + run.contacts(released) + run.contacts(held)
        if rest:
            return PageContinues(page.with_contacts(rest))
        return PageDone()

    def _first_token_by(self, page: Page, slice_end: float | None, contended: bool) -> float | None:
        """When a page too big to run at once gives up its contacts' first-token waits: a
        slice after its slice, so it hands its prefetch slot back even at a slow inbox, yet
        its waiters thin out gradually while the campaign's next page here takes over (all
        at the slice's end left the campaign no waiter for a moment, and another campaign
        reserved the slots ahead meanwhile). One that fits runs out its token waits (a
        small campaign is not sent to the back of the queue for them)."""
        cfg = self._config
        if slice_end is None or cfg.slice_s is None or not contended:
            return None
        return slice_end + cfg.slice_s if len(page.contacts) > cfg.contacts_per_page else None

    async def _crowded_out(self, page: Page) -> bool:
        """Whether the page (delivered with other pages waiting in the queue) goes back to
        the queue untouched: its campaign's contacts here already fill a page waiting for
        tokens at its inbox, and the crowd does not thin out within `CROWDED_PARK_S`."""
        limit = self._config.contacts_per_page

        def crowded() -> bool:
            waiting = self._crowd(page.inbox_id, page.campaign_id)
            return waiting >= limit or self._starting[page.inbox_id, page.campaign_id] > 0

        until = self._monotonic() + CROWDED_PARK_S
        while crowded():
            left = until - self._monotonic()
            if left <= 0 or self._shutdown.is_set():
                return True
            await self._nap(self._shutdown, min(_CROWD_POLL_S, left))
        return False

    def _starting_here(self, page: Page) -> Callable[[], None]:
        """Count the page as starting until the returned callable is first called (its
        contacts started, or as many as its slots take) and those contacts have taken their
        first step: they queue for tokens then, so `crowd` sees them. Approximate: a
        contact whose campaign status or inbox health must first be read from Redis
        queues a round trip later."""
        key = (page.inbox_id, page.campaign_id)
        self._starting[key] += 1
        done = False

        def started() -> None:
            nonlocal done
            if not done:
                done = True
                # after the first steps of the tasks `start` created
                asyncio.get_running_loop().call_soon(self._started, key)

        return started

    def _started(self, key: tuple[str, str]) -> None:
        self._starting[key] -= 1
        if self._starting[key] <= 0:
            del self._starting[key]

    async def _waiting_pages(self) -> bool:
        try:
            return await self._backlog()
        except Exception:  # cannot tell: yield, as if pages waited
            log.debug("could not read the queue's backlog", exc_info=True)
            return True

    async def _while_ledger_down(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry `call` while PostgreSQL is unreachable, holding the page (not nacking it:
        every requeue counts toward the delivery limit, and an outage is not the page's fault).
        """
        for attempt in itertools.count(1):
            try:
                return await call()
            except DependencyUnavailable as error:
                if self._shutdown.is_set():
                    raise
                log.warning("ledger unavailable; holding the page", extra={"error": str(error)})
                await self._nap(self._shutdown, doubling_delay(attempt, *_LEDGER_RETRY_S))
        raise AssertionError("unreachable")  # itertools.count never ends


class _PageRun:
    """The contacts of one page in flight, and those it could not start."""

    def __init__(
        self,
        page: Page,
        *,
        sender: SendsContacts,
        outcomes: OutcomeSink,
        monotonic: Callable[[], float],
        shutdown: asyncio.Event,
        slots: asyncio.Semaphore,
        deadline: float,
        in_flight: InFlight,
        slice_end: float | None = None,
        first_token_by: float | None = None,
        slice_s: float | None = None,
        backlog: Backlog = always_backlog,
    ) -> None:
        self._page = page
        self._sender = sender
        self._outcomes = outcomes
        self._monotonic = monotonic
        self._shutdown = shutdown
        self._slots = slots
        self._page_deadline = deadline
        self._deadline = deadline if slice_end is None else min(deadline, slice_end)
        self._slice_s = slice_s
        self._backlog = backlog
        self._first_token_by = first_token_by
        self._in_flight = in_flight
        self._by_id = {contact.contact_id: contact for contact in page.contacts}
        self._tasks: list[asyncio.Task[ContactOutcome]] = []
        self._commits: list[asyncio.Future[None]] = []
        self._tracked: set[str] = set()
        self.unstarted: list[Contact] = []

    def contacts(self, ids: Sequence[str]) -> list[Contact]:
        """The page's contacts with these ids."""
        return [self._by_id[contact_id] for contact_id in ids]

    def time_left(self) -> float:
        """Seconds until the page deadline (or the end of its slice, if sooner)."""
        return max(0.0, self._deadline - self._monotonic())

    def must_stop(self) -> bool:
        """True once no new contact may start (shutdown or page deadline)."""
        return self._shutdown.is_set() or self.time_left() <= 0

    async def start(
        self, contact_ids: Sequence[str], on_full: Callable[[], None] = lambda: None
    ) -> None:
        """Start each contact as a slot frees; what cannot start in time is kept in `unstarted`.
        `on_full` is called whenever a start takes the last free slot.

        Every claimed contact is in flight (its lease renewed) until its outcome commits.
        """
        contacts = self.contacts(contact_ids)
        self._track(contact_ids)
        for index, contact in enumerate(contacts):
            if not await self._may_start():
                self.unstarted.extend(contacts[index:])
                return
            self._tasks.append(asyncio.create_task(self._run(contact)))
            if self._slots.locked():
                on_full()

    async def finish(self) -> list[ContactOutcome]:
        """Wait for every started contact, release the unstarted ones, wait for the commits."""
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        cause: ReleaseCause = "shutdown" if self._shutdown.is_set() else "deadline"
        page = self._page
        for contact in self.unstarted:
            self._commit(ContactOutcome.released(page.campaign_id, contact.contact_id, cause))
        await asyncio.gather(*self._commits)
        for result in results:
            if isinstance(result, BaseException):  # cancelled: the loop catches the rest
                raise result
        return [result for result in results if isinstance(result, ContactOutcome)]

    async def _slice_goes_on(self) -> bool:
        """At its slice's end, a page with no other page waiting gets another slice."""
        if self._shutdown.is_set() or self._slice_s is None:
            return False
        if self._monotonic() >= self._page_deadline or await self._backlog():
            return False
        self._deadline = min(self._page_deadline, self._monotonic() + self._slice_s)
        return True

    async def _may_start(self) -> bool:
        """Take a slot once outcomes can be written, unless the page must stop first;
        False (no slot held) if it must. A wait outlasting a slice is checked again: the
        next slice never starts a send while the ledger is down."""
        writable = self._outcomes.writable
        while not self.must_stop() or await self._slice_goes_on():
            if not writable.is_set():  # the ledger is down: send nothing new
                await wait_any(writable, self._shutdown, seconds=self.time_left())
            elif await self._take_slot():
                if not self.must_stop() and writable.is_set():
                    return True
                # It came free only at the deadline, at shutdown or with the ledger down.
                self._slots.release()
        return False

    async def _run(self, contact: Contact) -> ContactOutcome:
        page = self._page
        request = InboxRequest(
            page.campaign_id,
            contact.contact_id,
            page.inbox_id,
            contact.to,
            page.message,
            contact.variables,
            first_token_by=self._first_token_by,
        )
        try:
            outcome = await self._sender.send(request)
        except Exception as error:
            outcome = self._crashed(contact, error)
        except BaseException:
            self._untrack(contact.contact_id)
            raise
        finally:
            self._slots.release()
        self._commit(outcome)
        return outcome

    def _commit(self, outcome: ContactOutcome) -> None:
        """Submit `outcome`; the contact stops being in flight once it is committed."""
        commit = self._outcomes.submit(outcome)
        self._commits.append(commit)
        commit.add_done_callback(lambda _: self._untrack(outcome.contact_id))

    def _track(self, contact_ids: Sequence[str]) -> None:
        fresh = [contact_id for contact_id in contact_ids if contact_id not in self._tracked]
        self._tracked.update(fresh)
        self._in_flight.add(self._page.campaign_id, fresh)

    def _untrack(self, contact_id: str) -> None:
        if contact_id in self._tracked:
            self._tracked.discard(contact_id)
            self._in_flight.discard(self._page.campaign_id, contact_id)

    def untrack_all(self) -> None:
        """Nothing of this page is in flight any more."""
        for contact_id in list(self._tracked):
            self._untrack(contact_id)

    def _crashed(self, contact: Contact, error: Exception) -> ContactOutcome:
        """A contact whose loop raised: log it (ids and code only) and release it `pending`."""
        campaign_id = self._page.campaign_id
        # The message may quote what the contact holds (a phone number): only its type and
        # the frames go above DEBUG.
        log.error(
            "contact loop raised %s; contact released pending for resume",
            type(error).__name__,
            extra={
                "campaign_id": campaign_id,
                "contact_id": contact.contact_id,
                "stack": "".join(traceback.format_tb(error.__traceback__)),
            },
        )
        log.debug("contact loop error", exc_info=error, extra={"contact_id": contact.contact_id})
        return ContactOutcome.released(campaign_id, contact.contact_id, "crashed")

    async def _take_slot(self) -> bool:
        slots = self._slots
        if not slots.locked():
            await slots.acquire()
            return True
        acquire = asyncio.ensure_future(slots.acquire())
        await wait_any(self._shutdown, acquire, seconds=self.time_left())
        if acquire.done() and not acquire.cancelled():
            return True
        acquire.cancel()
        return False
