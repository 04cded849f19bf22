"""`make bench`: run the benchmarks and write their figures into docs/PERFORMANCE.md."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

from tests.benchmarks.bench_ratelimit import overhead_per_token, saturate

DOC = Path(__file__).resolve().parents[2] / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- bench:ratelimit:begin -->", "<!-- bench:ratelimit:end -->"


def _machine() -> str:
    cpu = "unknown cpu"
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    redis_version = (
        subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
        .stdout.split(" v=")[-1]
        .split()[0]
        if os.path.exists("/usr/bin/redis-server")
        else "?"
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, Redis {redis_version}"
    )


def ratelimit_section() -> str:
    """Markdown table of the limiter benchmark."""
    rows = []
    for processes in (1, 2, 4):
        figures = saturate(processes, rate=2000, burst=20, waiters=200, seconds=5)
        rows.append(
            f"| {processes} | {figures.rate:g}/s | {figures.tokens} | {figures.calls} "
            f"| {figures.calls_per_token:.3f} | {figures.achieved_ratio:.3f} |"
        )
    per_token_us = asyncio.run(overhead_per_token()) * 1e6
    today = datetime.date.today().isoformat()
    return "\n".join(
        [
            BEGIN,
            f"Measured {today} on {_machine()}; command: `make bench`.",
            "",
            "Saturation: 200 waiters per process take tokens of one inbox for 5 s.",
            "",
            "| processes | rate | tokens | Redis calls | calls/token | achieved/rate |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Uncontended overhead: {per_token_us:.0f} µs per token (one caller, one Redis"
            " round trip on loopback).",
            END,
        ]
    )


def write_section(doc: Path, begin: str, end: str, section: str) -> None:
    """Replace the text between `begin` and `end` markers (append if absent)."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n## Rate limiter\n\n" + section + "\n"
    doc.write_text(text)


def main() -> None:
    """Run every benchmark and update docs/PERFORMANCE.md."""
    section = ratelimit_section()
    print(section)
    write_section(DOC, BEGIN, END, section)


if __name__ == "__main__":
    main()
