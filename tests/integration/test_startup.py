"""What a consumer checks as it starts."""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
import pytest

from sender.settings import Settings
from tests.integration.support import running_consumer


@pytest.mark.usefixtures("channel")  # removes the queues the consumer declares
async def test_start_warns_exactly_when_postgres_autovacuum_is_off(
    make_settings: Callable[..., Settings], pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    autovacuum = await pool.fetchval("SELECT current_setting('autovacuum')")
    with caplog.at_level(logging.WARNING, logger="sender.runtime.consumer_app"):
        async with running_consumer(make_settings()):
            pass

    warned = any("autovacuum is off" in record.getMessage() for record in caplog.records)
    assert warned == (autovacuum == "off")
