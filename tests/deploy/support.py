"""Helpers of the deploy/ tests: paths, the validators, parsed files.

The validators come from the project's own install (`.venv/bin` from the dev extras,
promtool from `make tools`), so they must be there; only kubectl, which is the machine's,
may be missing (its tests skip then), and promtool skips outside CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from sender.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
_VENV_BIN = Path(sys.executable).parent


def venv_tool(name: str) -> str:
    """A validator installed with the dev extras (a missing one is a broken install)."""
    found = shutil.which(name, path=str(_VENV_BIN)) or shutil.which(name)
    assert found, f"{name} is missing: run `make install` (it comes with the dev extras)"
    return found


def promtool() -> str:
    """promtool from `make tools` (.venv/tools) or PATH; skipped locally when absent."""
    local = Path(sys.prefix) / "tools" / "promtool"
    found = str(local) if local.is_file() else shutil.which("promtool")
    if found is None:
        reason = "promtool not found: run `make tools` (Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def run(args: Sequence[str], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a validator; output is kept for the assertion message."""
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` as a list of resources."""
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, output(result)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one resource of `kind`."""
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target."""
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def settings_names() -> set[str]:
    """Environment variable names that Settings reads (DESIGN.md §6)."""
    return {name.upper() for name in Settings.model_fields}


def markdown_anchors(markdown: str) -> set[str]:
    """GitHub heading anchors: lowercased, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
