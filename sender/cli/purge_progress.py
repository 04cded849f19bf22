"""The progress bar `campaign purge` and `db purge` show while contacts are deleted."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def purge_progress() -> Progress:
    """A transient bar on stderr: contacts deleted of the campaign's total, ETA."""
    return Progress(
        TextColumn("purging {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
