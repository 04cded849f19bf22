"""Waiting on several things at once with a time bound."""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_any(*things: asyncio.Event | asyncio.Future[Any], seconds: float | None) -> None:
    """Return once any event is set, any future is done, or `seconds` pass (None: never).

    Futures passed in are left running; the event waiters made here are cancelled.
    """
    waiters: list[asyncio.Future[Any]] = []
    watched: set[asyncio.Future[Any]] = set()
    for thing in things:
        if isinstance(thing, asyncio.Event):
            waiters.append(asyncio.ensure_future(thing.wait()))
            watched.add(waiters[-1])
        else:
            watched.add(thing)
    try:
        await asyncio.wait(
            watched,
            timeout=None if seconds is None else max(0.0, seconds),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
