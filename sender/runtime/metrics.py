"""Prometheus metrics of DESIGN.md §8 over an explicit registry, fed by loop events."""

from __future__ import annotations

import asyncio
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from sender.core.breaker import BreakerPhase
from sender.core.events import (
    AttemptFinished,
    AttemptStarted,
    BreakerTransition,
    CampaignAutoPaused,
    ContactFinished,
    ContactStarted,
    Event,
    PageOutcome,
    PageSettled,
    TerminalFailure,
    TokenWaited,
)
from sender.core.policy import ResultClass
from sender.core.ports import StopCause

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WAIT_BUCKETS = (0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_RESULT_CLASSES: tuple[ResultClass, ...] = get_args(ResultClass)
# A contact released because its campaign or this process stopped counts as aborted.
_ABORTS: frozenset[str] = frozenset(get_args(StopCause))


class Metrics:
    """Every metric `sender` exports; labels are bounded (mode is one value per deployment)."""

    def __init__(self, mode: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # process_resident_memory_bytes, process_open_fds, ... (Linux): memory and
        # connection growth show on the dashboard and in the soak run.
        ProcessCollector(registry=self.registry)
        self.mode = mode
        r = self.registry
        self.retries = Counter(
            "sender_dispatch_retries", "Retry attempts made.", ["mode", "attempt"], registry=r
        )
        self.terminal_failures = Counter(
            "sender_dispatch_terminal_failures",
            "Contacts failed for good.",
            ["mode", "reason"],
            registry=r,
        )
        self.contacts = Counter(
            "sender_contacts", "Contacts by outcome.", ["mode", "outcome"], registry=r
        )
        self.attempts = Counter(
            "sender_dispatch_attempts",
            "Inbox API attempts by result.",
            ["mode", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "sender_dispatch_duration_seconds",
            "Duration of one attempt.",
            ["mode"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.token_wait = Histogram(
            "sender_rate_limit_wait_seconds",
            "Wait for a rate-limit token.",
            ["mode"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.pages = Counter("sender_pages", "Pages settled.", ["mode", "outcome"], registry=r)
        self.in_flight = Gauge(
            "sender_contacts_in_flight", "Contacts being processed.", ["mode"], registry=r
        )
        self.breaker_transitions = Counter(
            "sender_breaker_transitions",
            "Inbox breaker transitions this process saw.",
            ["mode", "to"],
            registry=r,
        )
        self.breakers_open = Gauge(
            "sender_breakers_open",
            "Inboxes whose breaker this process sees open or half-open.",
            ["mode"],
            registry=r,
        )
        self._breaker_to = {
            p: self.breaker_transitions.labels(mode, p) for p in get_args(BreakerPhase)
        }
        self._breakers_open = self.breakers_open.labels(mode)
        self.auto_pauses = Counter(
            "sender_campaign_auto_pauses",
            "Campaigns this process paused because most recent outcomes failed.",
            ["mode"],
            registry=r,
        )
        # Counted at scrape time; a number that only grows is a leak (the soak watches it).
        self.tasks = Gauge("sender_event_loop_tasks", "asyncio tasks alive.", ["mode"], registry=r)
        self.tasks.labels(mode).set_function(_running_tasks)
        # Children bound once: `.labels()` on every event is a measurable cost at 1,000s/s.
        self._attempts = {c: self.attempts.labels(mode, c) for c in _RESULT_CLASSES}
        self._duration = self.duration.labels(mode)
        self._token_wait = self.token_wait.labels(mode)
        self._in_flight = self.in_flight.labels(mode)
        self._contacts = {
            o: self.contacts.labels(mode, o) for o in ("sent", "failed", "aborted", "deferred")
        }
        self._auto_pauses = self.auto_pauses.labels(mode)
        self._pages = {o: self.pages.labels(mode, o) for o in get_args(PageOutcome)}

    def observe(self, event: Event) -> None:
        """Event listener: turn loop events into metric updates."""
        if isinstance(event, AttemptStarted):
            if event.retry_number > 0:
                self.retries.labels(self.mode, str(event.retry_number)).inc()
        elif isinstance(event, AttemptFinished):
            self._attempts[event.result.result_class].inc()
            self._duration.observe(event.duration_s)
        elif isinstance(event, TokenWaited):
            self._token_wait.observe(event.seconds)
        elif isinstance(event, TerminalFailure):
            self.terminal_failures.labels(self.mode, event.kind).inc()
        elif isinstance(event, ContactStarted):
            self._in_flight.inc()
        elif isinstance(event, ContactFinished):
            self._in_flight.dec()
            outcome = event.outcome
            if outcome.status in ("sent", "failed"):
                self._contacts[outcome.status].inc()
            elif outcome.release in _ABORTS:
                self._contacts["aborted"].inc()
            elif outcome.release == "deferred":
                self._contacts["deferred"].inc()
        elif isinstance(event, PageSettled):
            self._pages[event.outcome].inc()
        elif isinstance(event, BreakerTransition):
            self._breaker_to[event.to].inc()
            if event.was == "closed":
                self._breakers_open.inc()
            elif event.to == "closed":
                self._breakers_open.dec()
        elif isinstance(event, CampaignAutoPaused):
            self._auto_pauses.inc()

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 if absent); for tests and the demo summary."""
        sample = self.registry.get_sample_value(name, {"mode": self.mode, **labels})
        return sample or 0.0


def _running_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the event loop
        return 0.0
