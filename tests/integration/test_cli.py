"""The `sender` CLI as a user runs it: JSON shapes and exit codes."""

from __future__ import annotations

import orjson

from sender.testing import Step
from tests.integration.conftest import World
from tests.integration.support import make_page, publish, run_cli, running_consumer, settings_env


async def test_failures_json_lists_reasons_attempts_and_last_status(world: World) -> None:
    world.inbox.script("c-0001", Step(400))
    world.inbox.script("c-0002", Step(503), Step(action="reset"))
    world.inbox.script("c-0003", Step(action="reset"), Step(action="reset"))
    settings = world.settings(dispatch_retry_count=1, dispatch_backoff_base_ms=10)
    async with running_consumer(settings) as app:
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 4))
        )
        await app.wait_settled(1)
    env = settings_env(settings)

    every = run_cli("campaign", "failures", world.names.campaign, "--json", env=env)
    only_4xx = run_cli(
        "campaign", "failures", world.names.campaign, "--json", "--reason", "http_4xx", env=env
    )
    human = run_cli("campaign", "failures", world.names.campaign, env=env)

    assert every.returncode == 0, every.stderr
    assert orjson.loads(every.stdout) == [
        {"contact_id": "c-0001", "reason": "http_4xx: 400", "attempts": 1, "last_status_code": 400},
        {
            "contact_id": "c-0002",
            "reason": 'dispatch_exhausted_retries: ["503","DISPATCH_ERROR"]',
            "attempts": 2,
            "last_status_code": 503,
        },
        {
            "contact_id": "c-0003",
            "reason": 'dispatch_exhausted_retries: ["DISPATCH_ERROR","DISPATCH_ERROR"]',
            "attempts": 2,
            "last_status_code": None,
        },
    ]
    assert [f["contact_id"] for f in orjson.loads(only_4xx.stdout)] == ["c-0001"]
    assert human.returncode == 0
    assert "c-0002" in human.stdout


async def test_status_without_json_prints_a_table(world: World) -> None:
    settings = world.settings()
    async with running_consumer(settings) as app:
        await publish(
            world.channel, world.names.queue, orjson.dumps(make_page(world.names.campaign, 3))
        )
        await app.wait_settled(1)

    result = run_cli("campaign", "status", world.names.campaign, env=settings_env(settings))

    assert result.returncode == 0, result.stderr
    assert world.names.campaign in result.stdout
    assert "sent" in result.stdout


def test_unknown_campaign_is_one_line_and_exit_1(world: World) -> None:
    for command in ("status", "failures"):
        result = run_cli("campaign", command, world.names.campaign, "--json")
        assert result.returncode == 1
        assert result.stderr.strip() == f"unknown campaign: {world.names.campaign}"
        assert result.stdout == ""


def test_a_campaign_id_outside_the_contract_is_bad_usage() -> None:
    result = run_cli("campaign", "status", "drop table;")
    assert result.returncode == 2
    assert "invalid campaign id" in result.stderr


def test_an_invalid_setting_stops_run_with_one_line_naming_it() -> None:
    result = run_cli("run", env={"DISPATCH_BACKOFF_JITTER": "sometimes", "PATH": "/usr/bin"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("invalid setting DISPATCH_BACKOFF_JITTER")


def test_db_migrate_is_idempotent() -> None:
    first = run_cli("db", "migrate")
    second = run_cli("db", "migrate")
    assert first.returncode == 0
    assert second.returncode == 0
    assert second.stdout.strip() == "schema up to date"


def test_unreachable_database_is_one_line_and_exit_1() -> None:
    result = run_cli(
        "campaign",
        "status",
        "spring-sale",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres", "PATH": "/usr/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("service unavailable:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_without_reachable_services_names_what_is_missing_in_one_line() -> None:
    result = run_cli(
        "demo",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres", "PATH": "/usr/bin"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PostgreSQL at 127.0.0.1:1" in lines[0]
    assert "docker compose -f deploy/compose.yaml up -d" in lines[0]
