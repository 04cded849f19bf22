"""`sender db migrate|check|purge`."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import typer
from rich.progress import TaskID

from sender.adapters.ledger_purge import finished_before, purge_campaign
from sender.adapters.migrate import migrate as apply_migrations
from sender.adapters.operator_ledger import CountDrift, OperatorLedger
from sender.adapters.postgres import connect_pool
from sender.cli.common import fail, load_settings, run_async, with_pool
from sender.cli.purge_progress import purge_progress

app = typer.Typer(
    no_args_is_help=True,
    help="Ledger schema, checks and purges.",
    pretty_exceptions_show_locals=False,
)


@app.command()
def migrate() -> None:
    """Create or upgrade the ledger schema."""
    settings = load_settings()

    async def _migrate() -> list[int]:
        pool = await connect_pool(settings.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await apply_migrations(conn)
        finally:
            await pool.close()

    applied = run_async(_migrate())
    typer.echo(f"applied migrations: {applied}" if applied else "schema up to date")


@app.command()
def check() -> None:
    """Recount every campaign's contacts and compare with the kept counts (exit 1 on drift)."""
    drift: list[CountDrift] = run_async(
        with_pool(load_settings(), lambda pool: OperatorLedger(pool).count_drift())
    )
    for d in drift:
        typer.echo(f"campaign {d.campaign_id} {d.status}: kept {d.kept}, counted {d.actual}")
    if drift:
        raise fail(f"counts drifted in {len({d.campaign_id for d in drift})} campaign(s)")
    typer.echo("counts match the contacts")


@app.command()
def purge(
    older_than: Annotated[
        float, typer.Option("--older-than", metavar="DAYS", min=0, help="Finished this long ago.")
    ],
) -> None:
    """Delete completed or stopped campaigns that finished more than DAYS ago, with their rows."""

    async def _purge(pool: asyncpg.Pool) -> tuple[int, int]:
        found = await finished_before(pool, older_than)
        deleted = 0
        with purge_progress() as progress:
            for campaign_id, total in found:
                task = progress.add_task(campaign_id, total=total)

                def advance(n: int, task: TaskID = task) -> None:
                    progress.advance(task, n)

                deleted += await purge_campaign(pool, campaign_id, on_batch=advance)
                progress.remove_task(task)
        return len(found), deleted

    campaigns, contacts = run_async(with_pool(load_settings(), _purge))
    typer.echo(f"purged {campaigns} campaign(s), {contacts} contacts")
