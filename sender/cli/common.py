"""Helpers shared by the commands: settings loading, running a coroutine, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import typer
from aiormq.exceptions import AMQPError
from pydantic import ValidationError

from sender.adapters.operator_ledger import OperatorLedger
from sender.adapters.postgres import connect_pool
from sender.core.page import IdKind, validate_id
from sender.errors import InvalidId, SenderError
from sender.runtime.bootstrap import operator_services
from sender.runtime.campaign_control import CampaignControl
from sender.settings import Settings, describe_error

T = TypeVar("T")


def fail(message: str, exit_code: int = 1) -> typer.Exit:
    """Print `message` as one line on stderr; return the exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(exit_code)


def checked_id(kind: IdKind, value: str) -> str:
    """A typer callback body: the id if it is a contract id, else bad usage (exit 2)."""
    try:
        return validate_id(kind, value)
    except InvalidId as error:
        raise typer.BadParameter(str(error)) from None


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
        raise fail(str(error), error.exit_code) from None
    except (OSError, asyncpg.PostgresError, AMQPError) as error:
        raise fail(f"service unavailable: {type(error).__name__}: {error}") from None


async def with_pool(settings: Settings, action: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Open a small pool, run `action` on it, close the pool."""
    pool = await connect_pool(settings.database_url, max_size=2)
    try:
        return await action(pool)
    finally:
        await pool.close()


async def with_ledger(settings: Settings, action: Callable[[OperatorLedger], Awaitable[T]]) -> T:
    """Run `action` on the operator's ledger over a small pool."""
    return await with_pool(settings, lambda pool: action(OperatorLedger(pool)))


async def with_control(settings: Settings, action: Callable[[CampaignControl], Awaitable[T]]) -> T:
    """Open the ledger, Redis and a publisher; run `action` on a CampaignControl."""
    async with operator_services(settings) as services:
        return await action(services.control)
