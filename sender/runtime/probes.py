"""The HTTP side of operations: `/metrics`, `/healthz`, `/readyz` on `METRICS_HOST:METRICS_PORT`.

Readiness is computed at most once a second and shared: a flood of `/readyz` (a
misconfigured probe, a scanner) runs one PostgreSQL query and one Redis PING per second,
not one per request from the pools the hot path needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]
_CHECK_TIMEOUT_S = 2.0
# How long one readiness answer is served to every probe before the checks run again.
READINESS_MAX_AGE_S = 1.0


class SharedReadiness:
    """Runs the checks at most once per `max_age_s`; concurrent callers share one run."""

    def __init__(
        self,
        checks: dict[str, ReadinessCheck],
        *,
        max_age_s: float = READINESS_MAX_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = checks
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._last: dict[str, bool] | None = None
        self._last_at = 0.0
        self._running: asyncio.Future[dict[str, bool]] | None = None
        self.runs = 0

    async def results(self) -> dict[str, bool]:
        """Each check's last result, fresh within `max_age_s`."""
        if self._last is not None and self._monotonic() - self._last_at < self._max_age_s:
            return self._last
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        # Shielded: a probe that hangs up must not cancel the run the others wait for.
        return await asyncio.shield(self._running)

    async def _run(self) -> dict[str, bool]:
        self.runs += 1
        started = self._monotonic()
        try:
            results = await asyncio.gather(*(_run_check(c) for c in self._checks.values()))
            self._last = dict(zip(self._checks, results, strict=True))
            self._last_at = started
            return self._last
        finally:
            self._running = None


class ProbeServer:
    """Serves metrics and health probes; `checks` name the dependencies readiness needs."""

    def __init__(
        self,
        registry: CollectorRegistry,
        checks: dict[str, ReadinessCheck],
        *,
        readiness: SharedReadiness | None = None,
    ) -> None:
        self._registry = registry
        self.readiness = readiness or SharedReadiness(checks)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        """Bind `host:port` and serve; `port=0` picks a free one (see `.port`)."""
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
        checks = await self.readiness.results()
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def _run_check(check: ReadinessCheck) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            return await check()
    except Exception:
        return False
