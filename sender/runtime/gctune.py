"""Garbage-collector settings for a long-running consumer process.

With CPython's defaults a consumer under load spent a large share of its CPU in the
cyclic collector (docs/PERFORMANCE.md has the figures): every full collection walked
every object imported at start (pydantic, aiohttp, typer, ...), and each page's
contacts were promoted before they died. Freezing what exists at start moves those
objects out of every later scan, and a larger young generation lets a contact's
short-lived objects die before a collection sees them. Memory stays flat
(docs/RELIABILITY.md soak).
"""

from __future__ import annotations

import gc

# Allocations before a young collection; young collections per middle one; middle per full.
SERVING_THRESHOLDS = (10_000, 20, 10)


def tune_for_serving() -> None:
    """Freeze the objects alive now (imports, settings) and widen the collector's thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
