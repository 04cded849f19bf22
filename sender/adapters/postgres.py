"""PostgreSQL connections: the pool, and which errors mean "unreachable" (not a bad statement)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from sender.errors import DependencyUnavailable

P = ParamSpec("P")
T = TypeVar("T")

# A statement that takes longer than this is treated as PostgreSQL being unreachable.
COMMAND_TIMEOUT_S = 10.0

# Errors that mean "PostgreSQL cannot be reached right now", as opposed to a bad statement.
LEDGER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def autovacuum_enabled(
    conn: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record],
) -> bool:
    """Whether the server runs autovacuum (contacts pile up dead rows quickly without it)."""
    return bool(await conn.fetchval("SELECT current_setting('autovacuum') = 'on'"))


async def connect_pool(database_url: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections decode jsonb with orjson."""

    async def _init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )

    return await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        init=_init,
        timeout=COMMAND_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
    )


def raises_unavailable(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn "cannot reach PostgreSQL" errors into `DependencyUnavailable("postgres")`."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except LEDGER_UNAVAILABLE as error:
            raise DependencyUnavailable("postgres", type(error).__name__) from error

    return wrapper


async def close_pool(pool: asyncpg.Pool, within_s: float = 5.0) -> None:
    """Close gracefully, or terminate if PostgreSQL does not answer in time."""
    try:
        await asyncio.wait_for(pool.close(), within_s)
    except TimeoutError:
        pool.terminate()
