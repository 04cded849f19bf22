"""`sender campaign list [--json] [--status S] [--inbox ID]` (DESIGN.md §7) over the real ledger."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import orjson
import pytest

from sender.adapters.ledger import store_contacts
from sender.core.page import Contact
from sender.settings import Settings
from tests.integration.conftest import World
from tests.integration.support import run_cli, settings_env

# (suffix, status, contacts by status), created oldest first.
CAMPAIGNS = (
    ("done", "completed", {"sent": 3, "failed": 1}),
    ("halted", "stopped", {"sent": 1, "pending": 2}),
    ("held", "paused", {"pending": 2}),
    ("live", "running", {"sent": 2, "sending": 1, "pending": 3}),
)


async def _cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    env = {**settings_env(settings), "COLUMNS": "200"}  # a wide table: nothing wrapped
    return await asyncio.to_thread(run_cli, "campaign", "list", *args, env=env)


async def _seed(pool: asyncpg.Pool, token: str, inbox_id: str) -> list[str]:
    """The four campaigns, one per status, each a second newer than the last."""
    ids = []
    async with pool.acquire() as conn:
        for age, (suffix, status, by_status) in enumerate(reversed(CAMPAIGNS)):
            campaign_id = f"t-{token}-{suffix}"
            ids.append(campaign_id)
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, inbox_id, message, status, created_at)"
                " VALUES ($1, $2, '{}'::jsonb, $3, now() - make_interval(secs => $4))",
                campaign_id,
                inbox_id,
                status,
                float(age),
            )
            contacts = [
                (f"{wanted}-{i}", wanted) for wanted, n in by_status.items() for i in range(n)
            ]
            await store_contacts(
                conn, campaign_id, [Contact(contact_id=c, to="+5511999") for c, _ in contacts]
            )
            for contact_id, wanted in contacts:
                await conn.execute(
                    "UPDATE contacts SET status = $3 WHERE campaign_id = $1 AND contact_id = $2",
                    campaign_id,
                    contact_id,
                    wanted,
                )
    return ids


@pytest.fixture
def inbox_id(world: World) -> str:
    return f"list-{world.names.token}"


async def test_list_json_is_an_array_of_status_objects_newest_first(
    world: World, inbox_id: str
) -> None:
    ids = await _seed(world.pool, world.names.token, inbox_id)

    result = await _cli(world.settings(), "--json", "--inbox", inbox_id)

    assert result.returncode == 0, result.stderr
    listed = orjson.loads(result.stdout)
    assert [item["campaign_id"] for item in listed] == ids  # newest first
    by_id = {item["campaign_id"]: item for item in listed}
    for suffix, status, by_status in CAMPAIGNS:
        counts = {"pending": 0, "sending": 0, "sent": 0, "failed": 0, **by_status}
        assert by_id[f"t-{world.names.token}-{suffix}"] == {
            "campaign_id": f"t-{world.names.token}-{suffix}",
            "status": status,
            "inbox_id": inbox_id,
            "counts": counts,
            "total": sum(counts.values()),
            "status_reason": None,
            "deferred": 0,
        }
    status = await asyncio.to_thread(
        run_cli, "campaign", "status", ids[0], "--json", env=settings_env(world.settings())
    )
    assert orjson.loads(status.stdout) == by_id[ids[0]]  # the same object as `status --json`


@pytest.mark.parametrize("status", ["running", "paused", "stopped", "completed"])
async def test_list_status_filter_keeps_only_that_status(
    world: World, inbox_id: str, status: str
) -> None:
    await _seed(world.pool, world.names.token, inbox_id)

    result = await _cli(world.settings(), "--json", "--inbox", inbox_id, "--status", status)

    assert result.returncode == 0, result.stderr
    assert [item["status"] for item in orjson.loads(result.stdout)] == [status]


async def test_list_table_shows_progress_and_rate_and_eta_for_running_campaigns(
    world: World, inbox_id: str
) -> None:
    ids = await _seed(world.pool, world.names.token, inbox_id)

    result = await _cli(world.settings(), "--inbox", inbox_id)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "campaign" in line and "progress" in line)
    columns = [cell.strip() for cell in header.strip("┃│ ").split("┃")]
    assert columns == [
        "campaign", "status", "inbox", "progress", "sent", "failed", "pending", "total",
        "rate/s", "ETA", "reason",
    ]  # fmt: skip
    rows = {
        cells[0]: cells
        for line in lines
        if (cells := [cell.strip() for cell in line.strip("│ ").split("│")])[0] in ids
    }
    done, live = rows[ids[3]], rows[ids[0]]
    assert done[1:4] == ["completed", inbox_id, "██████████ 100%"]
    assert live[1] == "running"
    assert live[3].endswith("33%")  # 2 of 6 finished
    assert live[8] == "0.0"  # running: a measured rate (nothing finished meanwhile)
    assert live[9] == "-"  # and no ETA at a rate of 0
    assert done[8] == done[9] == "-"  # not running: no rate


@pytest.mark.parametrize(
    "args", [("--status", "sleeping"), ("--inbox", "bad inbox!"), ("--status", "")]
)
async def test_list_rejects_a_bad_status_or_inbox_with_exit_2(
    world: World, args: tuple[str, ...]
) -> None:
    result = await _cli(world.settings(), *args)

    assert result.returncode == 2, result.stdout
    assert os.linesep.join(result.stderr.splitlines()).strip()
