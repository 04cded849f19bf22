"""`sender db migrate`."""

from __future__ import annotations

import typer

from sender.adapters.migrate import migrate as apply_migrations
from sender.adapters.postgres import connect_pool
from sender.cli.common import load_settings, run_async

app = typer.Typer(
    no_args_is_help=True, help="OperatorLedger schema.", pretty_exceptions_show_locals=False
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
