"""Private RabbitMQ, PostgreSQL and Redis instances for tests that stop their service.

A test that stops the shared service leaves every later test on the machine without it
when the run is interrupted mid-test. These run on spare ports under a well-known temp
dir, each in its own session, so its process group holds all of its processes.
Stopped by PID in the fixture finalizer and in an `atexit` hook (Ctrl-C); after a SIGKILL
of pytest, the next run's sweep finds the orphans by their record and stops them.
A missing binary skips the test locally and fails it in CI (CI=true).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

ROOT = Path(tempfile.gettempdir()) / "sender-private-services"
RECORD = "record.json"
# Listening ports come from below the kernel's ephemeral range so that no outgoing
# connection takes one while its service is down for a restart; 25672 and 35672-35682 are
# RabbitMQ's distribution and CLI ports.
_PORTS = range(20000, 32000)
_RESERVED = {25672, *range(35672, 35683)}
_ORPHAN_AGE_S = 600


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where every fault test must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason)


def spare_port() -> int:
    """A TCP port outside the ephemeral range that nothing listens on right now."""
    rng = random.SystemRandom()
    while True:
        port = rng.choice(_PORTS)
        if port in _RESERVED:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _started_at(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused PID apart), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"  # no /proc: alive, start time unknown
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie is gone but for its reaping


def _alive(pid: int | None, started: str | None) -> bool:
    if pid is None:
        return False
    now = _started_at(pid)
    return now is not None and (started in (None, "?") or now in ("?", started))


def _kill_group(pid: int, started: str | None) -> None:
    """SIGKILL the process group led by `pid`, if `pid` is still the process we started."""
    if _alive(pid, started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def sweep_stale() -> list[str]:
    """Stop and remove the instances whose pytest process is gone; return their names."""
    swept = []
    for home in sorted(ROOT.glob("*")) if ROOT.is_dir() else []:
        try:
            record: dict[str, Any] = json.loads((home / RECORD).read_text())
        except (OSError, ValueError):
            if time.time() - home.stat().st_mtime < _ORPHAN_AGE_S:
                continue  # being created right now by another run
            record = {}
        if record and _alive(record["owner_pid"], record["owner_started"]):
            continue
        if record.get("pid") is not None:
            _kill_group(record["pid"], record["started"])
        shutil.rmtree(home, ignore_errors=True)
        swept.append(home.name)
    return swept


class PrivateService:
    """One server process on a spare port, under its own directory; restartable."""

    kind = "service"
    start_timeout_s = 60.0
    close_signal = signal.SIGKILL  # nothing to keep

    def __init__(self) -> None:
        self.port = spare_port()
        self.name = f"{self.kind}-{uuid.uuid4().hex[:12]}"
        self.home = ROOT / self.name
        ROOT.mkdir(mode=0o755, exist_ok=True)
        self.home.mkdir(mode=0o755)
        self._process: subprocess.Popen[bytes] | None = None
        self._record(None)
        atexit.register(self.close)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        """The server's command line, in the foreground."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def user(self) -> str | None:
        """The user the server runs as (None: this process's user)."""
        return None

    def ready(self) -> bool:
        """Does the server accept clients yet?"""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
            return True
        return False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts clients."""
        assert not self.running, f"{self.name} is already running"
        with open(self.home / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.home,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, out of reach of Ctrl-C
                **_run_as(self.user()),
            )
        self._record(self._process.pid)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not self.ready():
            if not self.running or time.monotonic() > deadline:
                self.kill()
                log = (self.home / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} did not start on {self.port}:\n{log}")
            time.sleep(0.1)  # another process: nothing to await but its port

    def stop(self, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 30) -> None:
        """Send `sig` to the server and wait for it to exit (SIGKILL its group on timeout)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server's whole process group."""
        process = self._process
        # Only while the leader is unreaped: until then its PID, the group's id, is not reused.
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def close(self) -> None:
        """Stop the server for good and remove its directory (idempotent)."""
        atexit.unregister(self.close)
        self.stop(self.close_signal)
        shutil.rmtree(self.home, ignore_errors=True)

    def _record(self, pid: int | None) -> None:
        owner = os.getpid()
        record = {
            "owner_pid": owner,
            "owner_started": _started_at(owner),
            "pid": pid,
            "started": _started_at(pid) if pid else None,
            "port": self.port,
        }
        (self.home / RECORD).write_text(json.dumps(record))


ServiceT = TypeVar("ServiceT", bound=PrivateService)


class PrivateRedis(PrivateService):
    """`redis-server` that keeps nothing on disk."""

    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.home)),
        ]


class PrivatePostgres(PrivateService):
    """A throwaway cluster (`initdb`), run as the postgres user when we are root."""

    kind = "postgres"
    close_signal = signal.SIGQUIT  # immediate shutdown: its backends go with it

    def __init__(self, bindir: Path) -> None:
        self._bindir = bindir
        super().__init__()
        self.data = self.home / "data"
        user = self.user()
        if user:
            shutil.chown(self.home, user)
        try:
            subprocess.run(
                [
                    *(str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres"),
                    *("-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"),
                ],
                check=True,
                capture_output=True,
                cwd=self.home,
                timeout=120,
                **_run_as(user),
            )
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def command(self) -> list[str]:
        return [
            *(str(self._bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)),
            *("-k", str(self.home), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
        ]

    def ready(self) -> bool:
        """postmaster.pid's status line says `ready` once it accepts connections."""
        with contextlib.suppress(OSError):
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            return len(lines) >= 8 and lines[7].strip() == "ready"
        return False


class PrivateRabbitMQ(PrivateService):
    """A second RabbitMQ node: own name, ports, Erlang cookie, config and no plugins."""

    kind = "rabbitmq"

    def __init__(self, bindir: Path) -> None:
        self._bindir = bindir
        super().__init__()
        self.dist_port = spare_port()
        self.node = f"rabbit-test-{self.name.rsplit('-', 1)[1]}@localhost"
        (self.home / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [str(self._bindir / "rabbitmq-server")]

    def env(self) -> dict[str, str]:
        home = str(self.home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.pop("NOTIFY_SOCKET", None)
        env.update(
            HOME=home,  # the node's and its CLI's Erlang cookie
            RUNNING_UNDER_SYSTEMD="true",  # exec the VM: our PID is the node's
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=f"{home}/rabbitmq.conf",
            RABBITMQ_ADVANCED_CONFIG_FILE=f"{home}/advanced.config",
            RABBITMQ_CONF_ENV_FILE=f"{home}/rabbitmq-env.conf",
            RABBITMQ_ENABLED_PLUGINS_FILE=f"{home}/enabled_plugins",
            RABBITMQ_MNESIA_BASE=f"{home}/mnesia",
            RABBITMQ_LOG_BASE=f"{home}/log",
            RABBITMQ_PID_FILE=f"{home}/rabbit.pid",
            RABBITMQ_SERVER_START_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def ctl(self, *args: str) -> None:
        """`rabbitmqctl` against this node (stop_app, start_app, await_startup…)."""
        subprocess.run(
            [str(self._bindir / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=120,
        )


def _run_as(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as `user` with only that user's groups."""
    if user is None:
        return {}
    ids = pwd.getpwnam(user)
    return {"user": ids.pw_uid, "group": ids.pw_gid, "extra_groups": []}


def _rabbitmq_bindir() -> Path | None:
    # Debian's /usr/sbin scripts re-run themselves as the rabbitmq user via `su`, which
    # resets HOME (the cookie) and hides the node's PID; the real scripts live here.
    for candidate in (Path("/usr/lib/rabbitmq/bin"), *_which_dir("rabbitmq-server")):
        if (candidate / "rabbitmq-server").exists() and (candidate / "rabbitmqctl").exists():
            return candidate
    return None


def _postgres_bindir() -> Path | None:
    for candidate in _which_dir("initdb"):
        if (candidate / "postgres").exists():
            return candidate
    return None


def _which_dir(program: str) -> list[Path]:
    found = shutil.which(program)
    return [Path(os.path.realpath(found)).parent] if found else []


@contextlib.contextmanager
def started(service: ServiceT) -> Iterator[ServiceT]:
    """Run `service` for the block; closed at its end or at interpreter exit."""
    try:
        service.start()
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_private_services() -> None:
    """Stop what an earlier run killed with SIGKILL left behind."""
    sweep_stale()


@pytest.fixture(scope="module")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this module's own, for tests that stop the broker."""
    bindir = _rabbitmq_bindir()
    if bindir is None or shutil.which("erl") is None:
        unavailable("rabbitmq-server is not installed")
    with started(PrivateRabbitMQ(bindir)) as node:
        yield node


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this module's own, for tests that stop the database."""
    bindir = _postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries (initdb, postgres) are not installed")
    with started(PrivatePostgres(bindir)) as cluster:
        yield cluster


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (it starts in well under a second)."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    with started(PrivateRedis()) as server:
        yield server
