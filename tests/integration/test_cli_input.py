"""Bad settings, CLI values and CSVs as an operator would type them: one line, exit 2 or 1,
no traceback, no password; the database holds the same bounds as the CLI."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.integration.conftest import World
from tests.integration.support import contact_rows, run_cli, settings_env

PASSWORD = "s3cr3t-pw"
AMQP_WITH_PASSWORD = f"amqp://guest:{PASSWORD}@127.0.0.1:5672/"


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert PASSWORD not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INBOX_RATE_PER_SEC", "inf"),
        ("INBOX_RATE_PER_SEC", "nan"),
        ("RATE_LIMIT_MAX_WAIT_MS", "0"),
        ("PAGE_DEADLINE_S", "0.001"),
        ("CLAIM_LEASE_MS", "1"),
        ("INBOX_API_URL", "htp://h/{inbox_id}"),
        ("INBOX_API_URL", "http://{inbox_id}.h/x"),
        ("ABORT_POLL_MS", "0"),
        ("AMQP_URL", f"amqp://guest:{PASSWORD}@127.0.0.1:notaport/"),
    ],
)
def test_sender_run_refuses_a_bad_setting_in_one_line_naming_it(name: str, value: str) -> None:
    env = {"PATH": "/usr/bin", "AMQP_URL": AMQP_WITH_PASSWORD, name: value}

    result = run_cli("run", env=env)

    assert result.returncode == 2
    assert _one_line(result.stderr).startswith(f"invalid setting {name}: ")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--rate", "inf"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--rate", "0"], "--rate"),
        (["--rate", "1e400"], "--rate"),
        (["--rate", "5", "--burst", "99999999999"], "--burst"),
        (["--rate", "5", "--burst", "0"], "--burst"),
    ],
)
def test_set_rate_refuses_values_that_spin_or_overflow(args: list[str], option: str) -> None:
    inbox = f"t-{uuid.uuid4().hex[:8]}"

    result = run_cli("inbox", "set-rate", inbox, *args, env={"PATH": "/usr/bin"})

    assert result.returncode == 2
    assert _one_line(result.stderr).startswith(f"invalid {option} ")


@pytest.mark.parametrize(
    ("rate", "burst"),
    [("NaN", 1), ("Infinity", 1), ("-Infinity", 1), ("0", 1), ("2000000", 1), ("5", 1000001)],
)
async def test_the_database_refuses_the_same_rates(world: World, rate: str, burst: int) -> None:
    inbox = f"{world.names.campaign}-rate"
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await world.pool.execute(
                "INSERT INTO inbox_rates (inbox_id, rate_per_sec, burst)"
                " VALUES ($1, $2::text::float8, $3)",
                inbox,
                rate,
                burst,
            )
    finally:
        await world.pool.execute("DELETE FROM inbox_rates WHERE inbox_id = $1", inbox)


def _start_args(campaign: str, csv_path: Path, message: str = '{"text": "hi"}') -> list[str]:
    return [
        "campaign",
        "start",
        *("--campaign", campaign, "--inbox", "inbox-1"),
        *("--message", message, "--contacts", str(csv_path)),
    ]


async def _start(world: World, csv_path: Path, **settings: object):  # type: ignore[no-untyped-def]
    env = settings_env(world.settings(**settings))
    args = _start_args(world.names.campaign, csv_path)
    return await asyncio.to_thread(run_cli, *args, env=env)


async def _ready(world: World) -> int:
    declared = await world.channel.declare_queue(world.names.queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def test_a_csv_with_a_byte_order_mark_starts_the_campaign(
    world: World, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffcontact_id,to,name\r\nc-1,+5511900000001,Ana\r\n".encode())

    result = await _start(world, path)

    assert result.returncode == 0, result.stderr
    assert list(await contact_rows(world.pool, world.names.campaign)) == ["c-1"]
    assert await _ready(world) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contact_id,to,name,name\nc-1,+551100,A,B\n", "line 1: duplicate column(s) name"),
        ("contact_id,to,note\nc-1,+551100," + "x" * 200_000 + "\n", "line 2: field larger"),
        (
            "contact_id,to,note\nc-1,+551100,ok\nc-2,+551100," + "x" * 100_000 + "\n",
            "line 3: contact c-2 is ",
        ),
    ],
    ids=["duplicate header", "oversize field", "oversize contact"],
)
async def test_a_bad_csv_is_refused_in_one_line_before_anything_is_published(
    world: World, tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)

    result = await _start(world, path, max_page_bytes=64 * 1024)

    assert result.returncode == 1
    assert expected in _one_line(result.stderr)
    assert await contact_rows(world.pool, world.names.campaign) == {}
    assert (
        await world.pool.fetchval(
            "SELECT count(*) FROM campaigns WHERE campaign_id = $1", world.names.campaign
        )
        == 0
    )


async def test_a_message_too_deep_for_a_page_is_bad_usage(world: World, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("contact_id,to\nc-1,+551100\n")
    deep = '{"a":' * 40 + "{}" + "}" * 40
    env = settings_env(world.settings())

    result = await asyncio.to_thread(
        run_cli, *_start_args(world.names.campaign, path, deep), env=env
    )

    assert result.returncode == 2
    assert _one_line(result.stderr).startswith("invalid --message: ")
