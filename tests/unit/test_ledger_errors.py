"""Which PostgreSQL errors mean "ledger down" and which "the page holds what it refuses"."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from sender.adapters.postgres import (
    is_refused_data,
    is_unavailable,
    raises_unavailable,
    refused_as_page_error,
)
from sender.errors import DependencyUnavailable, PageRefused

OUTAGES: list[BaseException] = [
    ConnectionRefusedError(111, "refused"),
    TimeoutError(),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CrashShutdownError("crash"),
]
DATA_ERRORS: list[BaseException] = [
    asyncpg_base.DataError("invalid input for query argument $3: {...} (Recursion limit reached)"),
    asyncpg.DataError("invalid input syntax"),
    asyncpg.StringDataRightTruncationError("value too long for type character varying(20)"),
    asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"),
    asyncpg.CheckViolationError("new row violates check constraint"),
    asyncpg.ProgramLimitExceededError("index row size exceeds btree maximum"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_connection_failures_are_unavailable_not_refusals(error: BaseException) -> None:
    assert is_unavailable(error)
    assert not is_refused_data(error)


@pytest.mark.parametrize("error", DATA_ERRORS, ids=lambda e: type(e).__name__)
def test_data_errors_are_refusals_never_unavailable(error: BaseException) -> None:
    assert not is_unavailable(error)
    assert is_refused_data(error)


def test_client_side_configuration_errors_are_not_outages() -> None:
    assert not is_unavailable(asyncpg.ClientConfigurationError("bad sslmode"))
    assert not is_unavailable(asyncpg.UnsupportedServerFeatureError("no"))


def test_a_bug_in_our_sql_is_neither() -> None:
    error = asyncpg.UndefinedTableError('relation "nope" does not exist')

    assert not is_unavailable(error)
    assert not is_refused_data(error)


async def test_a_data_error_in_a_ledger_call_is_page_refused_without_the_value() -> None:
    @raises_unavailable
    async def admit() -> None:
        with refused_as_page_error():
            raise asyncpg_base.DataError(
                "invalid input for query argument $2: ['+5511999990001'] (too long)"
            )

    with pytest.raises(PageRefused) as caught:
        await admit()

    assert caught.value.reason == (
        "invalid_page: the ledger refused it: DataError: invalid input for query argument $2"
    )
    assert "+5511" not in caught.value.reason


async def test_a_postgres_data_error_names_its_sqlstate() -> None:
    with pytest.raises(PageRefused) as caught, refused_as_page_error():
        raise asyncpg.StringDataRightTruncationError("value too long")

    assert caught.value.reason == (
        "invalid_page: the ledger refused it: StringDataRightTruncationError (22001)"
    )


async def test_an_outage_in_a_ledger_call_is_still_dependency_unavailable() -> None:
    @raises_unavailable
    async def admit() -> None:
        with refused_as_page_error():
            raise asyncpg.InterfaceError("pool is closing")

    with pytest.raises(DependencyUnavailable):
        await admit()
