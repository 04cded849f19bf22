"""Per-inbox rates: settings defaults, ledger overrides, refreshed in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sender.core.ratelimit import Rate

log = logging.getLogger(__name__)

LoadOverrides = Callable[[], Awaitable[dict[str, Rate]]]


class RateBook:
    """Answers "what is this inbox's rate?" from memory; `refresh_forever` keeps it current."""

    def __init__(self, default: Rate, load: LoadOverrides, refresh_s: float = 0.5) -> None:
        self._default = default
        self._load = load
        self._refresh_s = refresh_s
        self._overrides: dict[str, Rate] = {}

    def rate(self, inbox_id: str) -> Rate:
        """The inbox's override, or the default."""
        return self._overrides.get(inbox_id, self._default)

    async def refresh(self) -> None:
        """Reload the overrides once."""
        self._overrides = await self._load()

    async def refresh_forever(self) -> None:
        """Reload every `refresh_s` (so `sender inbox set-rate` lands within a second)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.warning("could not refresh inbox rates; keeping the last ones", exc_info=True)
            await asyncio.sleep(self._refresh_s)
