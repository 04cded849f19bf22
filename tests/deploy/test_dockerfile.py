"""deploy/Dockerfile: hadolint-clean, and its final stage is the slim, non-root image
that runs `sender run` with a /healthz health check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.support import DEPLOY, output, run, venv_tool

DOCKERFILE = DEPLOY / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            pairs.append((keyword.upper(), args.strip()))
    return pairs


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _final() -> dict[str, list[str]]:
    final: dict[str, list[str]] = {}
    for keyword, args in _stages()[-1]:
        final.setdefault(keyword, []).append(args)
    return final


def test_hadolint_passes() -> None:
    result = run([venv_tool("hadolint"), str(DOCKERFILE)])
    assert result.returncode == 0, output(result)
    assert result.stdout == ""


def test_both_stages_use_the_same_pinned_slim_python() -> None:
    bases = [stage[0][1].split()[0] for stage in _stages()]
    assert len(bases) == 2
    assert len(set(bases)) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", bases[0]), bases[0]


def test_final_stage_runs_sender_as_a_numeric_non_root_user() -> None:
    final = _final()
    user = final["USER"][-1].split(":")[0]
    assert user.isdigit(), f"USER {user}: use a numeric uid (runAsNonRoot can check it)"
    assert int(user) > 0
    assert json.loads(final["ENTRYPOINT"][-1]) == ["sender"]
    assert json.loads(final["CMD"][-1]) == ["run"]
    assert final["EXPOSE"] == ["9108"]


def test_final_stage_copies_the_venv_and_installs_no_build_tools() -> None:
    final = _final()
    assert any(c.startswith("--from=builder /opt/venv") for c in final["COPY"])
    text = " ".join(args for _, args in _stages()[-1])
    for tool in ("gcc", "build-essential", "apt-get", "pip install"):
        assert tool not in text, tool


def test_healthcheck_asks_healthz() -> None:
    (healthcheck,) = _final()["HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "127.0.0.1" in healthcheck
    assert "curl" not in healthcheck


class _Probe(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Probe.status = 200


def _run_healthcheck(port: int) -> int:
    (healthcheck,) = _final()["HEALTHCHECK"]
    argv = json.loads(healthcheck.split("CMD", 1)[1])
    argv[0] = sys.executable
    env = {**os.environ, "METRICS_PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_follows_healthz(
    probe_server: ThreadingHTTPServer, status: int, healthy: bool
) -> None:
    _Probe.status = status
    assert (_run_healthcheck(probe_server.server_address[1]) == 0) is healthy


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore
    sources = [
        source
        for args in (a for stage in _stages() for k, a in stage if k == "COPY")
        if not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source
