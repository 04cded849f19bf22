"""`sender` command line: thin typer commands over the same services the consumer uses.

Exit codes: 0 success, 1 failure (unknown campaign, service down), 2 bad usage or settings.
"""

from __future__ import annotations

import typer

from sender.cli import campaign, db, dead, demo, inbox, run

# Typer's pretty tracebacks print local variables by default, which may hold secrets.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Campaign sender.",
    pretty_exceptions_show_locals=False,
)
app.command("run")(run.run)
app.command("demo")(demo.demo)
app.add_typer(db.app, name="db")
app.add_typer(campaign.app, name="campaign")
app.add_typer(inbox.app, name="inbox")
app.add_typer(dead.app, name="dead")


def main() -> None:
    """Entry point of the `sender` script."""
    app()
