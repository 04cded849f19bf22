"""`sender campaign ...`: read a campaign's progress and failures."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from sender.cli.common import load_settings, run_async, with_ledger
from sender.errors import InvalidId, UnknownCampaign
from sender.ledger import CampaignSummary, Failure, Ledger
from sender.page import validate_id

app = typer.Typer(no_args_is_help=True, help="Campaign progress and control.")

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document for scripts.")]


def _campaign_id(value: str) -> str:
    try:
        return validate_id("campaign id", value)
    except InvalidId as error:
        raise typer.BadParameter(str(error)) from None


CampaignArg = Annotated[str, typer.Argument(metavar="ID", callback=_campaign_id)]


def summary_json(summary: CampaignSummary) -> dict[str, object]:
    """The `status --json` object of DESIGN.md §7."""
    return {
        "campaign_id": summary.campaign_id,
        "status": summary.status,
        "inbox_id": summary.inbox_id,
        "counts": summary.counts,
        "total": summary.total,
    }


def failure_json(failure: Failure) -> dict[str, object]:
    """One entry of `failures --json`."""
    return {
        "contact_id": failure.contact_id,
        "reason": failure.reason,
        "attempts": failure.attempts,
        "last_status_code": failure.last_status_code,
    }


@app.command()
def status(campaign_id: CampaignArg, as_json: JsonFlag = False) -> None:
    """Show a campaign's status and contact counts."""
    settings = load_settings()

    async def _summary(ledger: Ledger) -> CampaignSummary:
        summary = await ledger.summary(campaign_id)
        if summary is None:
            raise UnknownCampaign(campaign_id)
        return summary

    summary = run_async(with_ledger(settings, _summary))
    if as_json:
        typer.echo(orjson.dumps(summary_json(summary)).decode())
        return
    table = Table(
        title=f"campaign {summary.campaign_id} ({summary.status}, inbox {summary.inbox_id})"
    )
    for name in ("pending", "sending", "sent", "failed", "total"):
        table.add_column(name, justify="right")
    counts = summary.counts
    table.add_row(
        *(str(counts[k]) for k in ("pending", "sending", "sent", "failed")), str(summary.total)
    )
    Console().print(table)


@app.command()
def failures(
    campaign_id: CampaignArg,
    as_json: JsonFlag = False,
    reason: Annotated[str, typer.Option("--reason", help="Only reasons starting with this.")] = "",
) -> None:
    """List failed contacts with their reasons."""
    settings = load_settings()

    async def _failures(ledger: Ledger) -> list[Failure]:
        if await ledger.campaign_status(campaign_id) is None:
            raise UnknownCampaign(campaign_id)
        return await ledger.failures(campaign_id, reason)

    found = run_async(with_ledger(settings, _failures))
    if as_json:
        typer.echo(orjson.dumps([failure_json(f) for f in found]).decode())
        return
    table = Table(title=f"{len(found)} failed contacts of {campaign_id}")
    for name in ("contact_id", "reason", "attempts", "last status"):
        table.add_column(name)
    for f in found:
        table.add_row(f.contact_id, f.reason or "", str(f.attempts), str(f.last_status_code or "-"))
    Console().print(table)
