"""`sender run`: the consumer and its probe server until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

import typer

from sender.cli.common import load_settings, run_async
from sender.runtime.gctune import tune_for_serving
from sender.runtime.logs import configure_logging


def run() -> None:
    """Consume pages and serve /metrics, /healthz, /readyz until SIGTERM, then drain."""
    # Imported here: every other command would pay for the consumer's modules at start.
    from sender.runtime.consumer_app import run_until_stopped

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    tune_for_serving()

    async def _main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_until_stopped(settings, stop)

    if not run_async(_main()):
        raise typer.Exit(1)
