"""`sender demo`: a self-contained run against the fake inbox, with a live view and a summary."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from sender.adapters.operator_ledger import CampaignSummary
from sender.cli.common import fail, load_settings, run_async
from sender.runtime.logs import configure_logging

if TYPE_CHECKING:
    from sender.runtime.demo import DemoSummary


def _progress(phase: str, summaries: dict[str, CampaignSummary]) -> Table:
    table = Table(title=f"demo — {phase}")
    for name in ("campaign", "status", "sent", "failed", "pending", "sending", "total"):
        table.add_column(name, justify="right")
    for campaign, s in summaries.items():
        c = s.counts
        table.add_row(
            campaign,
            s.status,
            str(c["sent"]),
            str(c["failed"]),
            str(c["pending"]),
            str(c["sending"]),
            str(s.total),
        )
    return table


def _summary(result: DemoSummary) -> Group:
    head = Table(title="demo summary", show_header=False)
    head.add_row("contacts", str(result.contacts))
    head.add_row("sent", str(result.sent))
    head.add_row("time taken", f"{result.seconds:.1f} s")
    head.add_row("paused and resumed", "yes, nothing lost" if result.paused_and_resumed else "no")
    head.add_row("POSTs to their inboxes", str(result.inbox_posts))
    head.add_row(
        "outage campaign",
        f"{result.outage_sent} of {result.outage_contacts} sent, {result.outage_posts} POSTs"
        " while down",
    )
    head.add_row("metrics", ", ".join(result.metrics_urls) + " (while it ran)")
    reasons = Table(title="failed by reason")
    reasons.add_column("reason")
    reasons.add_column("contacts", justify="right")
    for reason, count in result.failed_by_reason.items():
        reasons.add_row(reason, str(count))
    retries = Table(title="retries by attempt")
    retries.add_column("attempt")
    retries.add_column("retries", justify="right")
    for attempt, count in result.retries_by_attempt.items():
        retries.add_row(attempt, str(count))
    return Group(head, reasons, retries)


def _outage_line(result: DemoSummary) -> str:
    """E.g. `inbox down 3.1 s: breaker opened and closed, 0 contacts failed`."""
    if result.breaker_opened and result.breaker_closed:
        breaker = "breaker opened and closed"
    else:
        breaker = f"breaker opened {result.breaker_opened}x, closed {result.breaker_closed}x"
    return (
        f"inbox down {result.outage_seconds:g} s: {breaker},"
        f" {result.failed_during_outage} contacts failed"
    )


def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run sample campaigns against a fake inbox (retries, a 4xx, 429s, a pause, an outage)."""
    # Imported here: every other command would pay for the consumer's and the fake
    # inbox's modules (aiohttp among them) at start.
    from sender.runtime.demo import run_demo
    from sender.testing.services import COMPOSE_HINT, missing_services

    settings = load_settings()
    missing = missing_services(settings)
    if missing:
        raise fail(f"services not reachable: {', '.join(missing)}; start them or `{COMPOSE_HINT}`")
    configure_logging("console", "WARNING")
    console = Console(stderr=as_json)
    with Live(console=console, auto_refresh=False) as live:
        result = run_async(
            run_demo(settings, lambda phase, s: live.update(_progress(phase, s), refresh=True))
        )
    if as_json:
        typer.echo(orjson.dumps(dataclasses.asdict(result)).decode())
    else:
        if not console.is_terminal:
            console.line()  # Live leaves its last frame without a newline outside a terminal
        console.print(_summary(result))
        console.print(_outage_line(result))
        console.print(f"inspect: sender campaign failures {result.campaigns[0]}")
