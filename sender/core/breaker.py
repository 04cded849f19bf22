"""Per-inbox circuit breaker of DESIGN.md §11 as pure functions over a frozen state.

    closed --(window: >= min attempts, >= ratio transient)--> open (cooldown c)
    open --(now >= until, one probe claimed)--> half_open
    half_open --(probe ok)--> closed          (cooldown back to the base)
    half_open --(probe transient)--> open     (cooldown min(2c, max))

Times are wall-clock seconds (`until` is shared by every pod); the caller passes `now`.
Storage (Redis, compare-and-set on `gen`) lives in `sender.adapters.redis_inbox_health`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from sender.core.policy import AttemptResult
from sender.settings import Settings

BreakerPhase = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The `BREAKER_*` settings; `min_attempts == 0` disables the breaker."""

    window_s: float = 10.0
    min_attempts: int = 20
    failure_ratio: float = 0.5
    cooldown_s: float = 5.0
    cooldown_max_s: float = 60.0

    @property
    def enabled(self) -> bool:
        """False when `BREAKER_MIN_ATTEMPTS=0`."""
        return self.min_attempts > 0

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        """The breaker the `BREAKER_*` settings describe."""
        return cls(
            window_s=settings.breaker_window_s,
            min_attempts=settings.breaker_min_attempts,
            failure_ratio=settings.breaker_failure_ratio,
            cooldown_s=settings.breaker_cooldown_s,
            cooldown_max_s=settings.breaker_cooldown_max_s,
        )


@dataclass(frozen=True, slots=True)
class Breaker:
    """One inbox's breaker as stored: `gen` grows on every transition (compare-and-set)."""

    phase: BreakerPhase = "closed"
    until: float = 0.0
    """While `open`: when the probe may go (wall-clock seconds)."""
    cooldown_s: float = 0.0
    """The cooldown of the current (or last) opening; 0 before the first."""
    gen: int = 0


def is_transient_failure(result: AttemptResult) -> bool:
    """What the breaker counts as the inbox's fault: 5xx, `TIMEOUT`, `DISPATCH_ERROR`.

    A 4xx (429 included: the inbox is up and says "slower", which `Retry-After` holds
    handle) is the contact's or the sender's business, not an outage.
    """
    return result.status is None or 500 <= result.status <= 599


def should_open(attempts: int, failures: int, config: BreakerConfig) -> bool:
    """The window holds enough attempts and enough of them failed."""
    if not config.enabled or attempts < config.min_attempts or attempts <= 0:
        return False
    return failures >= config.failure_ratio * attempts


def after_window(
    breaker: Breaker, attempts: int, failures: int, now: float, config: BreakerConfig
) -> Breaker | None:
    """The breaker opened by the window's counts, or None when nothing changes."""
    if breaker.phase != "closed" or not should_open(attempts, failures, config):
        return None
    return Breaker("open", now + config.cooldown_s, config.cooldown_s, breaker.gen + 1)


def may_probe(breaker: Breaker, now: float) -> bool:
    """The cooldown is over: one probe may be claimed (a lapsed half-open probe too)."""
    return breaker.phase == "half_open" or (breaker.phase == "open" and now >= breaker.until)


def probing(breaker: Breaker) -> Breaker:
    """A probe was claimed."""
    return replace(breaker, phase="half_open", gen=breaker.gen + 1)


def after_probe(breaker: Breaker, succeeded: bool, now: float, config: BreakerConfig) -> Breaker:
    """Success closes (cooldown back to the base); failure reopens with the cooldown doubled."""
    if succeeded:
        return Breaker("closed", 0.0, 0.0, breaker.gen + 1)
    cooldown = min(max(breaker.cooldown_s, config.cooldown_s) * 2, config.cooldown_max_s)
    return Breaker("open", now + cooldown, cooldown, breaker.gen + 1)


def blocks(breaker: Breaker) -> bool:
    """No ordinary attempt may go (open or half-open: only the probe)."""
    return breaker.phase != "closed"
