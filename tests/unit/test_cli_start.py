"""The CLI's start: operator commands do not load the consumer's or the fake inbox's
modules (aiohttp, httpx, prometheus-client added ~200 ms to every command's start)."""

from __future__ import annotations

import subprocess
import sys

CONSUMER_ONLY = (
    "aiohttp",
    "httpx",
    "prometheus_client",
    "sender.runtime.consumer_app",
    "sender.testing",
)


def test_loading_the_cli_loads_none_of_the_consumers_modules() -> None:
    probe = f"import sys, sender.cli; print([m for m in {CONSUMER_ONLY!r} if m in sys.modules])"

    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()

    assert loaded == "[]"
