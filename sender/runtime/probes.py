"""The HTTP side of operations: `/metrics`, `/healthz`, `/readyz` on `METRICS_PORT`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]
_CHECK_TIMEOUT_S = 2.0


class ProbeServer:
    """Serves metrics and health probes; `checks` name the dependencies readiness needs."""

    def __init__(self, registry: CollectorRegistry, checks: dict[str, ReadinessCheck]) -> None:
        self._registry = registry
        self._checks = checks
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        """Bind and serve; `port=0` picks a free one (see `.port`)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        results = await asyncio.gather(*(_run_check(check) for check in self._checks.values()))
        checks = dict(zip(self._checks, results, strict=True))
        ready = all(results)
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def _run_check(check: ReadinessCheck) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            return await check()
    except Exception:
        return False
