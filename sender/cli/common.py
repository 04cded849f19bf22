"""Helpers shared by the commands: settings loading, running a coroutine, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError

from sender.errors import SenderError
from sender.ledger import Ledger, connect_pool
from sender.settings import Settings, describe_error

T = TypeVar("T")


def fail(message: str, exit_code: int = 1) -> typer.Exit:
    """Print `message` as one line on stderr; return the exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(exit_code)


def load_settings() -> Settings:
    """Settings from the environment, or a one-line failure naming the bad variable (exit 2)."""
    try:
        return Settings()
    except ValidationError as error:
        raise fail(describe_error(error), exit_code=2) from None


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine`, turning expected errors into one-line failures."""
    try:
        return asyncio.run(coroutine)
    except SenderError as error:
        raise fail(str(error)) from None
    except (OSError, asyncpg.PostgresError) as error:
        raise fail(f"service unavailable: {type(error).__name__}: {error}") from None


async def with_ledger(settings: Settings, action: Callable[[Ledger], Awaitable[T]]) -> T:
    """Open a small pool, run `action` on the ledger, close the pool."""
    pool = await connect_pool(settings.database_url, max_size=2)
    try:
        return await action(Ledger(pool))
    finally:
        await pool.close()
