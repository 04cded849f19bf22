"""docs/OPERATIONS.md: every `sender ...` command it shows exists, with those options, and
its links to its own sections resolve."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from sender.cli import app
from tests.deploy.support import OPERATIONS, markdown_anchors


def _commands() -> list[str]:
    """Commands in code spans and code blocks that start with `sender `."""
    text = OPERATIONS.read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    found = [c.split("#")[0].strip() for c in [*lines, *spans]]
    return sorted({c for c in found if c.startswith("sender ")})


def test_the_doc_shows_the_operator_commands() -> None:
    shown = {" ".join(c.split()[:3]) for c in _commands()}
    for command in (
        "sender campaign pause",
        "sender campaign resume",
        "sender campaign stop",
        "sender campaign status",
        "sender campaign failures",
        "sender campaign retry-failed",
        "sender inbox set-rate",
        "sender inbox show",
        "sender dead list",
        "sender dead replay",
    ):
        assert command in shown, command


@pytest.mark.parametrize("line", _commands())
def test_documented_command_exists_with_its_options(line: str) -> None:
    words = shlex.split(line)[1:]
    command = typer.main.get_command(app)
    while words and words[0] in getattr(command, "commands", {}):
        command = command.commands[words.pop(0)]
    assert not hasattr(command, "commands"), f"{line!r} names no command, only a group"
    options = {opt for param in command.params for opt in param.opts}
    for word in words:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{line!r}: no option {word}"


def test_links_to_sections_resolve() -> None:
    text = OPERATIONS.read_text()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links
    assert links <= markdown_anchors(text), links - markdown_anchors(text)
