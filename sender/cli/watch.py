"""`sender campaign status ID --watch`: a live view until the campaign completes or stops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import orjson
import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from sender.adapters.operator_ledger import CampaignSummary, OperatorLedger
from sender.errors import UnknownCampaign

REFRESH_S = 1.0
_FINAL = frozenset({"completed", "stopped"})


@dataclass(frozen=True, slots=True)
class Pace:
    """Send rate over the last refresh and the time left at that rate."""

    per_sec: float
    eta_s: float | None


def pace(done_before: int, done_now: int, seconds: float, left: int) -> Pace:
    """Contacts finished per second between two looks, and the ETA for `left` (pure)."""
    rate = max(0, done_now - done_before) / seconds if seconds > 0 else 0.0
    return Pace(rate, left / rate if rate > 0 else None)


def _done(summary: CampaignSummary) -> int:
    return summary.counts["sent"] + summary.counts["failed"]


def _view(summary: CampaignSummary, step: Pace, reasons: dict[str, int]) -> Group:
    counts = summary.counts
    table = Table(title=f"campaign {summary.campaign_id}")
    for name in ("status", "sent", "failed", "pending", "sending", "rate/s", "ETA"):
        table.add_column(name, justify="right")
    eta = "-" if step.eta_s is None else f"{step.eta_s:.0f}s"
    table.add_row(
        summary.status,
        *(str(counts[k]) for k in ("sent", "failed", "pending", "sending")),
        f"{step.per_sec:.0f}",
        eta,
    )
    failures = Table(title="failures by reason")
    failures.add_column("reason")
    failures.add_column("contacts", justify="right")
    for reason, count in reasons.items():
        failures.add_row(reason, str(count))
    bar = ProgressBar(total=max(summary.total, 1), completed=_done(summary))
    return Group(bar, table, failures)


async def watch(ledger: OperatorLedger, campaign_id: str, as_json: bool) -> None:
    """Refresh every second until the campaign is completed or stopped."""
    summary = await _summary(ledger, campaign_id)
    looked_at = time.monotonic()
    view = contextlib.nullcontext(None) if as_json else Live(auto_refresh=False)
    with view as live:
        while True:
            await asyncio.sleep(REFRESH_S)
            before, summary = summary, await _summary(ledger, campaign_id)
            now = time.monotonic()
            left = summary.counts["pending"] + summary.counts["sending"]
            step = pace(_done(before), _done(summary), now - looked_at, left)
            looked_at = now
            if as_json:
                line = {"status": summary.status, "counts": summary.counts, "rate": step.per_sec}
                typer.echo(orjson.dumps({"campaign_id": campaign_id, **line}).decode())
            elif live is not None:
                reasons = await ledger.failure_reasons(campaign_id)
                live.update(_view(summary, step, reasons), refresh=True)
            if summary.status in _FINAL:
                return


async def _summary(ledger: OperatorLedger, campaign_id: str) -> CampaignSummary:
    summary = await ledger.summary(campaign_id)
    if summary is None:
        raise UnknownCampaign(campaign_id)
    return summary
