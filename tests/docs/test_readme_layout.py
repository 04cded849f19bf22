"""The README's layout table names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\| (`[^|]+`) \|", re.M)
_PATH = re.compile(r"`([^`]+)`")


def _layout_table() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Layout") :]


def _named_paths() -> set[str]:
    """Every path in the table; a bare name is relative to the row's first path."""
    named: set[str] = set()
    for row in _ROW.findall(_layout_table()):
        paths = _PATH.findall(row)
        folder = paths[0].rsplit("/", 1)[0] if "/" in paths[0].rstrip("/") else ""
        for path in paths:
            full = path if "/" in path.rstrip("/") or not folder else f"{folder}/{path}"
            named.add(full.rstrip("/"))
    return named


def _modules() -> set[str]:
    package = ROOT / "sender"
    found = {
        str(path.relative_to(ROOT))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }
    return found - {"sender/__main__.py"}


def _covered(module: str, named: set[str]) -> bool:
    return any(module == path or module.startswith(path + "/") for path in named)


def test_every_module_of_the_package_is_in_the_layout_table() -> None:
    named = _named_paths()
    missing = sorted(module for module in _modules() if not _covered(module, named))
    assert missing == []


def test_every_path_in_the_layout_table_exists() -> None:
    absent = sorted(path for path in _named_paths() if not (ROOT / path).exists())
    assert absent == []
