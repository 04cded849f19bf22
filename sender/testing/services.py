"""Are PostgreSQL, Redis and RabbitMQ reachable? Used by `make test` and `make demo`.

Exit 0 when all are; otherwise start them with Docker compose where a Docker engine runs,
else print one line naming what is missing and how to start it, and exit 1.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from urllib.parse import urlsplit

from sender.settings import Settings

COMPOSE_HINT = "docker compose -f deploy/compose.yaml up -d"


def _endpoint(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def missing_services(settings: Settings) -> list[str]:
    """Names and addresses of the services that refuse a TCP connection."""
    wanted = {
        "PostgreSQL": _endpoint(settings.database_url, 5432),
        "Redis": _endpoint(settings.redis_url, 6379),
        "RabbitMQ": _endpoint(settings.amqp_url, 5672),
    }
    missing = []
    for name, (host, port) in wanted.items():
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            missing.append(f"{name} at {host}:{port}")
    return missing


def _docker_engine_runs() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def main() -> int:
    """Check the services; start them with compose if possible; say what is missing."""
    missing = missing_services(Settings())
    if not missing:
        return 0
    if _docker_engine_runs():
        subprocess.run(COMPOSE_HINT.split(), check=True)
        return 0
    print(f"services not reachable: {', '.join(missing)}; start them or run `{COMPOSE_HINT}`")
    return 1


if __name__ == "__main__":
    sys.exit(main())
