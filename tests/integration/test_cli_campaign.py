"""`sender campaign start|status --watch` and `sender dead` as a user runs them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from sender.adapters.amqp_topology import dead_queue_name
from sender.settings import Settings
from tests.integration.conftest import World
from tests.integration.support import contact_rows, publish, run_cli, running_consumer, settings_env


def _csv(path: Path, rows: list[str], header: str = "contact_id,to,name") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


async def _cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(run_cli, *args, env=settings_env(settings))


async def test_start_publishes_pages_that_consumers_send_and_the_campaign_completes(
    world: World,
    tmp_path: Path,
) -> None:
    settings = world.settings()
    contacts = _csv(tmp_path / "c.csv", [f"c-{i},+5511{i:09d},Ana" for i in range(25)])
    start = [
        "campaign",
        "start",
        "--campaign",
        world.names.campaign,
        "--inbox",
        "inbox-7",
        "--message",
        '{"text": "Hi {{name}}"}',
        "--contacts",
        str(contacts),
        "--page-size",
        "10",
    ]
    async with running_consumer(settings) as app:
        first = await _cli(settings, *start)
        assert first.returncode == 0, first.stderr
        assert "25 pending published in 3 pages" in first.stdout
        await app.wait_settled(3)
        watched = await _cli(
            settings, "campaign", "status", world.names.campaign, "--watch", "--json"
        )
        live = await _cli(settings, "campaign", "status", world.names.campaign, "--watch")
        again = await _cli(settings, *start)

    assert len(world.inbox.keys()) == 25
    assert world.inbox.requests[0].body["variables"] == {"name": "Ana"}
    assert world.inbox.requests[0].inbox_id == "inbox-7"
    assert watched.returncode == 0, watched.stderr
    last = orjson.loads(watched.stdout.strip().splitlines()[-1])
    assert last["status"] == "completed"
    assert last["counts"]["sent"] == 25
    assert live.returncode == 0, live.stderr
    assert "completed" in live.stdout
    assert "failures by reason" in live.stdout
    assert again.returncode == 0
    assert "0 pending published in 0 pages" in again.stdout
    status = orjson.loads(
        (await _cli(settings, "campaign", "status", world.names.campaign, "--json")).stdout
    )
    assert status["status"] == "completed"


async def test_a_csv_with_bad_rows_is_rejected_with_line_numbers_and_nothing_is_published(
    world: World,
    tmp_path: Path,
) -> None:
    settings = world.settings()
    contacts = _csv(
        tmp_path / "bad.csv",
        ["c-1,+5511900000001,Ana", "bad id,+5511900000002,Bo", "c-3,,Cy", "c-1,+5511900000004,Di"],
    )
    result = await _cli(
        settings,
        "campaign",
        "start",
        "--campaign",
        world.names.campaign,
        "--inbox",
        "inbox-1",
        "--message",
        "{}",
        "--contacts",
        str(contacts),
    )

    assert result.returncode == 1
    assert "line 3: contact_id" in result.stderr
    assert "line 4: to" in result.stderr
    assert "line 5: duplicate contact_id c-1 (first on line 2)" in result.stderr
    assert "+5511" not in result.stderr
    assert (
        await world.pool.fetchval(
            "SELECT count(*) FROM campaigns WHERE campaign_id = $1", world.names.campaign
        )
        == 0
    )
    declared = await world.channel.declare_queue(
        world.names.queue,
        passive=False,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.page_delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_queue_name(world.names.queue),
        },
    )
    assert declared.declaration_result.message_count == 0


async def test_start_usage_errors_exit_2(world: World, tmp_path: Path) -> None:
    settings = world.settings()
    contacts = _csv(tmp_path / "c.csv", ["c-1,+5511900000001,Ana"])
    base = [
        "campaign",
        "start",
        "--campaign",
        world.names.campaign,
        "--inbox",
        "inbox-1",
        "--contacts",
        str(contacts),
    ]
    not_json = await _cli(settings, *base, "--message", "{oops")
    not_object = await _cli(settings, *base, "--message", "[1]")
    no_file = await _cli(settings, *base, "--message", "@/nonexistent.json")
    too_big = await _cli(settings, *base, "--message", "{}", "--page-size", "5000")
    assert [r.returncode for r in (not_json, not_object, no_file, too_big)] == [2, 2, 2, 2]
    missing_csv = await _cli(
        settings,
        "campaign",
        "start",
        "--campaign",
        world.names.campaign,
        "--inbox",
        "inbox-1",
        "--message",
        "{}",
        "--contacts",
        str(tmp_path / "none.csv"),
    )
    assert missing_csv.returncode == 1
    assert missing_csv.stderr.startswith("cannot read")


async def test_control_commands_on_an_unknown_campaign_exit_1(world: World) -> None:
    settings = world.settings()
    for command in ("pause", "stop", "resume", "retry-failed"):
        result = await _cli(settings, "campaign", command, world.names.campaign)
        assert result.returncode == 1, command
        assert result.stderr.strip() == f"unknown campaign: {world.names.campaign}"


async def test_dead_list_and_replay(world: World) -> None:
    settings = world.settings(max_page_bytes=2048)
    async with running_consumer(settings) as app:
        await publish(world.channel, world.names.queue, b"{broken")
        good_but_oversize = {
            "campaign_id": world.names.campaign,
            "page": 0,
            "inbox_id": "inbox-1",
            "message": {},
            "contacts": [{"contact_id": "c-1", "to": "+1"}],
        }
        await publish(
            world.channel, world.names.queue, orjson.dumps(good_but_oversize) + b" " * 3000
        )
        await app.wait_settled(2)
    listed = await _cli(settings, "dead", "list", "--json")
    pages = orjson.loads(listed.stdout)
    nothing = await _cli(settings, "dead", "replay")
    unknown = await _cli(settings, "dead", "replay", "no-such-id")
    by_reason = {p["reason"]: p for p in pages}

    assert listed.returncode == 0, listed.stderr
    assert set(by_reason) == {"malformed_json", "too_large"}
    assert by_reason["too_large"]["campaign_id"] == world.names.campaign
    assert nothing.returncode == 2
    assert unknown.returncode == 1

    # Raise the size limit and replay the oversize page: it is sent this time.
    bigger = world.settings(max_page_bytes=1_000_000)
    async with running_consumer(bigger) as app:
        replayed = await _cli(bigger, "dead", "replay", by_reason["too_large"]["id"])
        assert replayed.returncode == 0, replayed.stderr
        await app.wait_settled(1)
    left = orjson.loads((await _cli(settings, "dead", "list", "--json")).stdout)
    assert [p["reason"] for p in left] == ["malformed_json"]
    assert (await contact_rows(world.pool, world.names.campaign))["c-1"]["status"] == "sent"
    human = await _cli(settings, "dead", "list")
    assert "malformed_json" in human.stdout
