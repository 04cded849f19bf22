"""`sender inbox set-rate|show|status|pause|resume`: per-inbox rates (picked up by consumers
within 1 s), health (breaker, holds) and the operator's hold."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from sender.adapters.inbox_store import InboxStore
from sender.cli.common import checked_id, fail, load_settings, run_async, with_pool
from sender.core.ratelimit import Rate
from sender.runtime.bootstrap import operator_services
from sender.runtime.inbox_control import InboxControl, InboxStatus
from sender.settings import MAX_BURST, MAX_RATE_PER_SEC, MIN_RATE_PER_SEC, Settings

app = typer.Typer(
    no_args_is_help=True,
    help="Per-inbox rate limits, health and holds.",
    pretty_exceptions_show_locals=False,
)
T = TypeVar("T")


async def _with_inboxes(settings: Settings, action: Callable[[InboxControl], Awaitable[T]]) -> T:
    async with operator_services(settings) as services:
        return await action(services.inbox_control)


def _inbox_id(value: str) -> str:
    return checked_id("inbox id", value)


def _rate(value: float) -> float:
    # Checked here, not with typer's min/max: NaN passes any range and its errors span lines.
    if not (math.isfinite(value) and MIN_RATE_PER_SEC <= value <= MAX_RATE_PER_SEC):
        raise fail(
            f"invalid --rate {value:g}: must be a finite number of tokens per second"
            f" from {MIN_RATE_PER_SEC:g} to {MAX_RATE_PER_SEC:g}",
            exit_code=2,
        )
    return value


def _burst(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_BURST:
        raise fail(f"invalid --burst {value}: must be from 1 to {MAX_BURST}", exit_code=2)
    return value


@app.command("set-rate")
def set_rate(
    inbox_id: Annotated[str, typer.Argument(metavar="INBOX", callback=_inbox_id)],
    rate: Annotated[float, typer.Option("--rate", callback=_rate, help="Tokens per second.")],
    burst: Annotated[
        int | None, typer.Option("--burst", callback=_burst, help="Bucket size.")
    ] = None,
) -> None:
    """Store an inbox's rate (and burst; default INBOX_BURST) durably for every consumer."""
    settings = load_settings()
    chosen = Rate(rate, burst if burst is not None else settings.inbox_burst)

    run_async(with_pool(settings, lambda pool: InboxStore(pool).set_rate(inbox_id, chosen)))
    typer.echo(f"inbox {inbox_id}: {chosen.per_sec:g}/s, burst {chosen.burst}")


@app.command()
def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the inbox rate overrides (other inboxes use INBOX_RATE_PER_SEC / INBOX_BURST)."""
    settings = load_settings()
    rates = run_async(with_pool(settings, lambda pool: InboxStore(pool).rates()))
    rows = [
        {"inbox_id": inbox, "rate_per_sec": rate.per_sec, "burst": rate.burst}
        for inbox, rate in sorted(rates.items())
    ]
    if as_json:
        typer.echo(orjson.dumps(rows).decode())
        return
    default = f"default {settings.inbox_rate_per_sec:g}/s, burst {settings.inbox_burst}"
    table = Table(title=f"inbox rates ({default})")
    for name in ("inbox", "rate/s", "burst"):
        table.add_column(name)
    for row in rows:
        table.add_row(str(row["inbox_id"]), f"{row['rate_per_sec']:g}", str(row["burst"]))
    Console().print(table)


@app.command()
def pause(inbox_id: Annotated[str, typer.Argument(metavar="INBOX", callback=_inbox_id)]) -> None:
    """Hold one inbox across every campaign and pod; its contacts stay pending."""
    settings = load_settings()
    run_async(_with_inboxes(settings, lambda inboxes: inboxes.pause(inbox_id)))
    typer.echo(f"inbox {inbox_id}: paused")


@app.command()
def resume(inbox_id: Annotated[str, typer.Argument(metavar="INBOX", callback=_inbox_id)]) -> None:
    """Lift the hold and send the pending contacts of the inbox's running campaigns."""
    settings = load_settings()
    published = run_async(_with_inboxes(settings, lambda inboxes: inboxes.resume(inbox_id)))
    typer.echo(
        f"inbox {inbox_id}: resumed; {published.contacts} pending contacts republished"
        f" in {published.pages} pages"
    )


@app.command()
def status(
    inbox_id: Annotated[str, typer.Argument(metavar="INBOX", callback=_inbox_id)],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rate, burst, breaker state (and until when), holds, campaigns waiting."""
    settings = load_settings()
    found = run_async(
        _with_inboxes(settings, lambda inboxes: inboxes.status(inbox_id, time.time()))
    )
    if as_json:
        typer.echo(orjson.dumps(found.as_json()).decode())
        return
    _print_status(found)


def _print_status(found: InboxStatus) -> None:
    data = found.as_json()
    breaker, hold = data["breaker"], data["hold"]
    until = f" until {breaker['until']}" if breaker["until"] else ""
    holds = [name for name, on in (("operator", hold["operator"]),) if on]
    if hold["retry_after_until"]:
        holds.append(f"Retry-After until {hold['retry_after_until']}")
    console = Console()
    console.print(f"inbox {found.inbox_id}: {found.rate.per_sec:g}/s, burst {found.rate.burst}")
    console.print(f"breaker: {breaker['state']}{until}")
    console.print(f"hold: {', '.join(holds) if holds else 'none'}")
    if not found.waiting:
        console.print("campaigns waiting: none")
        return
    table = Table(title="campaigns waiting")
    table.add_column("campaign")
    table.add_column("contacts not yet sent")
    for campaign_id, waiting in found.waiting:
        table.add_row(campaign_id, str(waiting))
    console.print(table)
