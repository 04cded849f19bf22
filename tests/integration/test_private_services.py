"""The private instances fault tests stop: gone after Ctrl-C, swept after SIGKILL."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.private_services import (
    RECORD,
    PrivateRedis,
    _started_at,
    started,
    sweep_stale,
    unavailable,
)

REPO = Path(__file__).resolve().parents[2]
# A run that starts a private redis-server, says where, and waits to be killed.
RUN = """
import json, time
from tests.integration.private_services import PrivateRedis
server = PrivateRedis()
server.start()
print(json.dumps({"home": str(server.home)}), flush=True)
time.sleep(120)
"""


@pytest.fixture(autouse=True)
def _redis_server() -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")


@contextlib.contextmanager
def _run_with_a_private_redis() -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    """Another Python process that owns a private redis-server: it, the home, the PID."""
    with subprocess.Popen(
        [sys.executable, "-c", RUN], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as run:
        try:
            assert run.stdout is not None
            home = Path(json.loads(run.stdout.readline())["home"])
            pid = json.loads((home / RECORD).read_text())["pid"]
            assert _started_at(pid) is not None
            yield run, home, pid
        finally:
            run.kill()


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while _started_at(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # another process's exit: nothing to await
    return True


def test_a_private_service_left_by_a_sigkilled_run_is_stopped_by_the_next_sweep() -> None:
    with _run_with_a_private_redis() as (run, home, pid):
        run.send_signal(signal.SIGKILL)
        run.wait(10)
    assert _started_at(pid) is not None  # SIGKILL ran no cleanup: the server is orphaned

    swept = sweep_stale()

    assert home.name in swept
    assert _wait_gone(pid)
    assert not home.exists()


def test_ctrl_c_of_a_run_stops_its_private_services_at_exit() -> None:
    with _run_with_a_private_redis() as (run, home, pid):
        run.send_signal(signal.SIGINT)
        run.wait(10)

    assert _wait_gone(pid)
    assert not home.exists()


def test_a_private_service_of_a_run_still_alive_is_left_alone() -> None:
    with started(PrivateRedis()) as server:
        swept = sweep_stale()
        assert server.name not in swept
        assert server.ready()
    assert not server.home.exists()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_server_binary_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="redis-server is not installed"):
        unavailable("redis-server is not installed")
