"""`sender campaign list`: every campaign at once, newest first (a table, or `--json`).

The counts are the kept ones (one read of campaigns and `campaign_counts`). The rate of a
running campaign is what finished between two such reads `RATE_SAMPLE_S` apart, the same
measure as `status --watch`, so no contact row is read and no index is needed for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rich.table import Table

from sender.adapters.operator_ledger import CampaignSummary, OperatorLedger
from sender.cli.watch import Pace, pace
from sender.core.ports import CampaignStatus

RATE_SAMPLE_S = 1.0
COLUMNS = ("campaign", "status", "inbox", "progress", "sent", "failed", "pending", "total")
RATE_COLUMNS = ("rate/s", "ETA", "reason")


async def campaigns_with_pace(
    ledger: OperatorLedger, status: CampaignStatus | None, inbox_id: str | None
) -> tuple[list[CampaignSummary], dict[str, Pace]]:
    """The campaigns, and for each running one its pace over `RATE_SAMPLE_S`."""
    before = await ledger.campaigns(status, inbox_id)
    if not any(summary.status == "running" for summary in before):
        return before, {}
    await asyncio.sleep(RATE_SAMPLE_S)  # the rate is what finishes meanwhile
    now = {summary.campaign_id: summary for summary in await ledger.campaigns(status, inbox_id)}
    paces = {}
    for old in before:
        new = now.get(old.campaign_id)
        if new is not None and new.status == "running":
            left = new.counts["pending"] + new.counts["sending"]
            paces[old.campaign_id] = pace(_done(old), _done(new), RATE_SAMPLE_S, left)
    return [now.get(old.campaign_id, old) for old in before], paces


def campaigns_table(summaries: Sequence[CampaignSummary], paces: dict[str, Pace]) -> Table:
    """The human view: one row per campaign, progress as a percentage and a bar."""
    table = Table(title=f"{len(summaries)} campaigns")
    for name in (*COLUMNS, *RATE_COLUMNS):
        table.add_column(name, justify="left" if name in _TEXT else "right", no_wrap=True)
    for summary in summaries:
        counts, step = summary.counts, paces.get(summary.campaign_id)
        table.add_row(
            summary.campaign_id,
            summary.status,
            summary.inbox_id,
            progress_cell(_done(summary), summary.total),
            *(str(counts[name]) for name in ("sent", "failed", "pending")),
            str(summary.total),
            "-" if step is None else f"{step.per_sec:.1f}",
            "-" if step is None or step.eta_s is None else f"{step.eta_s:.0f}s",
            summary.status_reason or "",
        )
    return table


def progress_cell(done: int, total: int, width: int = 10) -> str:
    """`███░░░░░░░  30%`: finished contacts of the total (pure)."""
    share = done / total if total else 1.0
    filled = round(share * width)
    return f"{'█' * filled}{'░' * (width - filled)} {share:4.0%}"


_TEXT = frozenset({"campaign", "status", "inbox", "progress", "reason"})


def _done(summary: CampaignSummary) -> int:
    return summary.counts["sent"] + summary.counts["failed"]
