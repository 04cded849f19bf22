"""PostgreSQL connections: the pool, and which errors mean "unreachable" (not a bad statement)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from sender.errors import DependencyUnavailable, PageRefused

P = ParamSpec("P")
T = TypeVar("T")

# A statement that takes longer than this is treated as PostgreSQL being unreachable.
COMMAND_TIMEOUT_S = 10.0

# Errors that mean "PostgreSQL cannot be reached right now", as opposed to a bad statement
# or bad data. `InterfaceError` counts only as itself ("connection is closed", "pool is
# closing"): its subclasses are client-side refusals (`DataError`: an argument that cannot
# be encoded; configuration; unsupported features), never an outage.
LEDGER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
_INTERFACE_NOT_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ValueError,  # asyncpg's client-side DataError and ClientConfigurationError
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)
# What PostgreSQL (or asyncpg, encoding an argument) refuses because of the data itself.
LEDGER_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # SQLSTATE class 22: a value out of range, too long, bad encoding
    asyncpg.IntegrityConstraintViolationError,  # class 23: a CHECK the row breaks
    asyncpg.ProgramLimitExceededError,  # class 54: a value beyond an index or jsonb limit
)


def is_unavailable(error: BaseException) -> bool:
    """True if `error` means PostgreSQL cannot be reached (never for a data error)."""
    if isinstance(error, asyncpg.InterfaceError):
        return not isinstance(error, _INTERFACE_NOT_UNAVAILABLE)
    return isinstance(error, LEDGER_UNAVAILABLE)


def is_refused_data(error: BaseException) -> bool:
    """True if PostgreSQL or asyncpg refused a value because of what it holds."""
    client_data_error = isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError)
    return client_data_error or isinstance(error, LEDGER_REFUSED)


def refusal_detail(error: BaseException) -> str:
    """What was refused, without the refused value (it may hold a phone number)."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return f"{type(error).__name__} ({sqlstate})"
    # asyncpg's client-side DataError: "invalid input for query argument $3: <value> (why)"
    return f"{type(error).__name__}: {str(error).split(':', 1)[0]}"


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
            if not is_unavailable(error):
                raise
            raise DependencyUnavailable("postgres", type(error).__name__) from error

    return wrapper


@contextlib.contextmanager
def refused_as_page_error() -> Iterator[None]:
    """Turn a data error raised inside into `PageRefused` (the page, not the ledger, is bad)."""
    try:
        yield
    except Exception as error:
        if is_refused_data(error):
            raise PageRefused(refusal_detail(error)) from error
        raise


async def close_pool(pool: asyncpg.Pool, within_s: float = 5.0) -> None:
    """Close gracefully, or terminate if PostgreSQL does not answer in time."""
    try:
        await asyncio.wait_for(pool.close(), within_s)
    except TimeoutError:
        pool.terminate()
