"""`sender dead list|replay`: inspect and replay dead-lettered pages."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from sender.adapters.dead_letters import DeadLetters, DeadPage
from sender.cli.common import fail, load_settings, run_async

app = typer.Typer(
    no_args_is_help=True, help="Dead-lettered pages.", pretty_exceptions_show_locals=False
)


def _as_json(page: DeadPage) -> dict[str, object]:
    return {
        "id": page.id,
        "reason": page.reason,
        "campaign_id": page.campaign_id,
        "page": page.page,
        "bytes": page.size_bytes,
    }


@app.command("list")
def list_pages(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List dead pages with their reasons (nothing is removed)."""
    pages = run_async(DeadLetters(load_settings()).list_pages())
    if as_json:
        typer.echo(orjson.dumps([_as_json(p) for p in pages]).decode())
        return
    table = Table(title=f"{len(pages)} dead pages")
    for name in ("id", "reason", "campaign", "page", "bytes"):
        table.add_column(name)
    for p in pages:
        table.add_row(p.id, p.reason, p.campaign_id or "-", str(p.page), str(p.size_bytes))
    Console().print(table)


@app.command()
def replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="[ID...]")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead page.")] = False,
) -> None:
    """Publish dead pages back to the pages queue (by id, or --all)."""
    if not ids and not replay_all:
        raise fail("name the dead pages to replay (see `sender dead list`) or pass --all", 2)
    chosen = frozenset(ids or ())
    replayed = run_async(DeadLetters(load_settings()).replay(chosen, replay_all=replay_all))
    missing = chosen - {page.id for page in replayed}
    typer.echo(f"replayed {len(replayed)} pages")
    if missing:
        raise fail(f"not in the dead queue: {', '.join(sorted(missing))}")
