"""`sender campaign ...`: read a campaign's progress and failures."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, cast, get_args

import asyncpg
import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sender.adapters.ledger_purge import purge_campaign
from sender.adapters.operator_ledger import CampaignSummary, Failure, OperatorLedger
from sender.cli.campaign_list import campaigns_table, campaigns_with_pace
from sender.cli.common import (
    checked_id,
    fail,
    load_settings,
    run_async,
    with_control,
    with_ledger,
    with_pool,
)
from sender.cli.purge_progress import purge_progress
from sender.cli.watch import watch
from sender.core.contact_blocks import read_blocks
from sender.core.page import Contact, Page
from sender.core.pagination import contact_budget
from sender.core.ports import CampaignStatus
from sender.errors import InvalidContacts, UnknownCampaign
from sender.runtime.campaign_control import CampaignControl, Published
from sender.runtime.campaign_start import StartProgress

app = typer.Typer(
    no_args_is_help=True, help="Campaign progress and control.", pretty_exceptions_show_locals=False
)

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document for scripts.")]


def _campaign_id(value: str) -> str:
    return checked_id("campaign id", value)


def _inbox_id(value: str) -> str:
    return checked_id("inbox id", value)


def _status_filter(value: str | None) -> str | None:
    if value is not None and value not in get_args(CampaignStatus):
        raise typer.BadParameter(f"must be one of {', '.join(get_args(CampaignStatus))}")
    return value


def _inbox_filter(value: str | None) -> str | None:
    return None if value is None else _inbox_id(value)


CampaignArg = Annotated[str, typer.Argument(metavar="ID", callback=_campaign_id)]


def summary_json(summary: CampaignSummary) -> dict[str, object]:
    """The `status --json` object of DESIGN.md §7."""
    return {
        "campaign_id": summary.campaign_id,
        "status": summary.status,
        "inbox_id": summary.inbox_id,
        "counts": summary.counts,
        "total": summary.total,
        "status_reason": summary.status_reason,
        "deferred": summary.deferred,
    }


@app.command()
def status(
    campaign_id: CampaignArg,
    as_json: JsonFlag = False,
    live: Annotated[
        bool, typer.Option("--watch", help="Live progress, rate, ETA, failures by reason.")
    ] = False,
) -> None:
    """Show a campaign's status and contact counts."""
    settings = load_settings()
    if live:
        run_async(with_ledger(settings, lambda ledger: watch(ledger, campaign_id, as_json)))
        return

    async def _summary(ledger: OperatorLedger) -> CampaignSummary:
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
    for name in ("pending", "sending", "sent", "failed", "total", "deferred"):
        table.add_column(name, justify="right")
    counts = summary.counts
    table.add_row(
        *(str(counts[k]) for k in ("pending", "sending", "sent", "failed")),
        str(summary.total),
        str(summary.deferred),
    )
    console = Console()
    console.print(table)
    if summary.status_reason is not None:
        console.print(f"reason: {summary.status_reason}", markup=False)


@app.command("list")
def list_campaigns(
    as_json: JsonFlag = False,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", metavar="S", help="Only campaigns in this status.", callback=_status_filter
        ),
    ] = None,
    inbox: Annotated[
        str | None,
        typer.Option(
            "--inbox", metavar="ID", help="Only campaigns of this inbox.", callback=_inbox_filter
        ),
    ] = None,
) -> None:
    """Every campaign with its status, counts and progress, newest first."""
    settings = load_settings()
    wanted = cast(CampaignStatus | None, status)
    if as_json:
        found = run_async(with_ledger(settings, lambda ledger: ledger.campaigns(wanted, inbox)))
        typer.echo(orjson.dumps([summary_json(summary) for summary in found]).decode())
        return
    summaries, paces = run_async(
        with_ledger(settings, lambda ledger: campaigns_with_pace(ledger, wanted, inbox))
    )
    Console().print(campaigns_table(summaries, paces))


@app.command()
def failures(
    campaign_id: CampaignArg,
    as_json: JsonFlag = False,
    reason: Annotated[str, typer.Option("--reason", help="Only reasons starting with this.")] = "",
) -> None:
    """List failed contacts with their reasons."""
    settings = load_settings()

    async def _failures(ledger: OperatorLedger) -> list[Failure]:
        if await ledger.campaign_status(campaign_id) is None:
            raise UnknownCampaign(campaign_id)
        return await ledger.failures(campaign_id, reason)

    found = run_async(with_ledger(settings, _failures))
    if as_json:
        # orjson writes dataclasses field by field: the `failures --json` objects of §7.
        typer.echo(orjson.dumps(found).decode())
        return
    table = Table(title=f"{len(found)} failed contacts of {campaign_id}")
    for name in ("contact_id", "reason", "attempts", "last status"):
        table.add_column(name)
    for f in found:
        table.add_row(f.contact_id, f.reason or "", str(f.attempts), str(f.last_status_code or "-"))
    Console().print(table)


def _load_message(value: str) -> dict[str, object]:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as error:
            raise typer.BadParameter(f"cannot read {value[1:]}: {error.strerror}") from None
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise typer.BadParameter("not valid JSON") from None
    if not isinstance(message, dict):
        raise typer.BadParameter("must be a JSON object")
    return message


def _start_progress() -> Progress:
    """Bytes of the file stored (for the ETA), rows, rows/s and contacts published."""
    return Progress(
        TextColumn("storing and publishing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s,"),
        TextColumn("{task.fields[published]:,} published"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _rejected(error: InvalidContacts, before: StartProgress) -> str:
    """The one-line refusal; says what earlier chunks of the file already stored and sent."""
    if not before.stored:
        return str(error)
    more = (
        f" (and {error.total - len(error.problems)} more)"
        if error.total > len(error.problems)
        else ""
    )
    return (
        f"contacts rejected: {'; '.join(error.problems)}{more}; the {before.stored} rows"
        f" before were stored and {before.published} published; fix the file and run"
        " start again (it is idempotent)"
    )


def _check_message(campaign_id: str, inbox_id: str, message: dict[str, object]) -> None:
    """Refuse (exit 2) a message no page could carry: too deep, NUL characters."""
    try:
        Page(
            campaign_id=campaign_id,
            page=0,
            inbox_id=inbox_id,
            message=message,
            contacts=[Contact(contact_id="probe", to="probe")],
        )
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        raise fail(f"invalid --message: {first['msg']}", 2) from None


@app.command()
def start(
    campaign_id: Annotated[str, typer.Option("--campaign", callback=_campaign_id)],
    inbox_id: Annotated[str, typer.Option("--inbox", callback=_inbox_id)],
    message: Annotated[str, typer.Option("--message", help="JSON object, or @file.")],
    contacts_file: Annotated[Path, typer.Option("--contacts", help="CSV: contact_id,to,...")],
    page_size: Annotated[int | None, typer.Option("--page-size", min=1)] = None,
) -> None:
    """Register a campaign from a CSV and publish its pages (streaming, idempotent)."""
    settings = load_settings()
    if page_size is not None and page_size > settings.max_page_contacts:
        raise fail(f"--page-size is above MAX_PAGE_CONTACTS ({settings.max_page_contacts})", 2)
    body = _load_message(message)
    _check_message(campaign_id, inbox_id, body)
    budget = contact_budget(campaign_id, inbox_id, body, settings.max_page_bytes)
    if budget <= 0:
        raise fail(f"invalid --message: larger than MAX_PAGE_BYTES ({settings.max_page_bytes})", 2)
    size = page_size or settings.max_page_contacts
    try:
        lines = contacts_file.open("rb")
    except OSError as error:
        raise fail(f"cannot read {contacts_file}: {error.strerror}") from None
    latest = [StartProgress()]  # the pipeline's running totals, read after a failure too
    with lines, _start_progress() as bar:
        task = bar.add_task(
            "start", total=max(os.fstat(lines.fileno()).st_size, 1), rows=0, rate=0.0, published=0
        )
        began = time.monotonic()

        def show(now: StartProgress) -> None:
            latest[0] = now
            rate = now.stored / max(time.monotonic() - began, 1e-6)
            bar.update(
                task,
                completed=os.lseek(lines.fileno(), 0, os.SEEK_CUR),
                rows=now.stored,
                rate=rate,
                published=now.published,
            )

        async def _start(control: CampaignControl) -> Published:
            try:
                return await control.start(
                    campaign_id,
                    inbox_id,
                    body,
                    read_blocks(lines, campaign_id, max_contact_bytes=budget),
                    size,
                    on_progress=show,
                )
            except InvalidContacts as error:
                raise fail(_rejected(error, latest[0])) from None

        try:
            published = run_async(with_control(settings, _start))
        except UnicodeDecodeError:
            raise fail(f"cannot read {contacts_file}: not UTF-8 text") from None
    typer.echo(
        f"campaign {campaign_id}: {latest[0].stored} contacts stored,"
        f" {published.contacts} pending published in {published.pages} pages"
    )


@app.command()
def pause(campaign_id: CampaignArg) -> None:
    """Pause: every consumer stops starting attempts at once; contacts stay pending."""
    run_async(with_control(load_settings(), lambda control: control.pause(campaign_id)))
    typer.echo(f"campaign {campaign_id} paused")


@app.command()
def stop(campaign_id: CampaignArg) -> None:
    """Stop for good: like pause, but it cannot be resumed."""
    run_async(with_control(load_settings(), lambda control: control.stop(campaign_id)))
    typer.echo(f"campaign {campaign_id} stopped")


@app.command()
def resume(campaign_id: CampaignArg) -> None:
    """Resume a paused campaign and republish its pending contacts."""
    published = run_async(with_control(load_settings(), lambda c: c.resume(campaign_id)))
    typer.echo(
        f"campaign {campaign_id} running; {published.contacts} pending contacts"
        f" republished in {published.pages} pages"
    )


@app.command("retry-failed")
def retry_failed(
    campaign_id: CampaignArg,
    reason: Annotated[str, typer.Option("--reason", help="Only reasons starting with this.")] = "",
) -> None:
    """Send failed contacts (optionally only one reason) again."""
    published = run_async(
        with_control(load_settings(), lambda c: c.retry_failed(campaign_id, reason))
    )
    typer.echo(
        f"campaign {campaign_id}: {published.contacts} contacts back to pending,"
        f" {published.pages} pages published"
    )


@app.command()
def purge(campaign_id: CampaignArg) -> None:
    """Delete a completed or stopped campaign and all its contacts, in small batches."""
    settings = load_settings()

    async def _purge(pool: asyncpg.Pool) -> int:
        summary = await OperatorLedger(pool).summary(campaign_id)
        if summary is None:
            raise UnknownCampaign(campaign_id)
        with purge_progress() as progress:
            task = progress.add_task(campaign_id, total=summary.total)
            return await purge_campaign(
                pool, campaign_id, on_batch=lambda n: progress.advance(task, n)
            )

    deleted = run_async(with_pool(settings, _purge))
    typer.echo(f"campaign {campaign_id} purged: {deleted} contacts deleted")
