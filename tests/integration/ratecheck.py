"""Measuring what the fake inbox saw: sliding-window counts and achieved rates."""

from __future__ import annotations

from collections.abc import Sequence


def max_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """The most arrivals in any half-open window [t, t + window_s) starting at an arrival."""
    ordered = sorted(times)
    most = 0
    end = 0
    for start, t in enumerate(ordered):
        while end < len(ordered) and ordered[end] < t + window_s:
            end += 1
        most = max(most, end - start)
    return most


def steady_rate(times: Sequence[float], burst: int) -> float:
    """Arrivals per second after the initial burst, from first to last arrival."""
    ordered = sorted(times)
    span = ordered[-1] - ordered[0]
    return (len(ordered) - burst) / span
