"""Stopping background tasks when one swallows its cancellation (redis-py pub/sub can)."""

from __future__ import annotations

import asyncio
import contextlib

from sender.runtime.consumer_app import _stop_tasks


async def test_a_task_that_swallows_its_cancellation_is_ended_by_closing_its_connection() -> None:
    connection_closed = asyncio.Event()

    async def stubborn_listener() -> None:
        # What a library read that eats the cancellation looks like:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await connection_closed.wait()  # blocked on its socket until the client closes

    async def close_pubsub() -> None:
        connection_closed.set()

    polite = asyncio.create_task(asyncio.Event().wait())
    stubborn = asyncio.create_task(stubborn_listener())
    await asyncio.sleep(0)  # both are waiting

    await _stop_tasks([polite, stubborn], close_pubsub)

    assert polite.cancelled()
    assert connection_closed.is_set()
    assert stubborn.done()


async def test_tasks_that_end_on_cancellation_leave_the_connection_alone() -> None:
    closed: list[bool] = []

    async def close_pubsub() -> None:
        closed.append(True)

    task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)

    await _stop_tasks([task], close_pubsub)

    assert task.cancelled()
    assert closed == []
