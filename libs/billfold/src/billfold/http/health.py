"""``/healthz`` (the process is alive), ``/readyz`` (its dependencies answer), ``/metrics``.

Readiness checks are registered per app: a name and a coroutine that raises on failure.
Each runs with a short timeout, so a hung dependency makes the pod unready instead of
hanging the probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from billfold.logs import get_logger

Check = Callable[[web.Application], Awaitable[None]]
READY_CHECKS: web.AppKey[dict[str, Check]] = web.AppKey("ready_checks", dict)

log = get_logger("billfold.health")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app.get(READY_CHECKS, {})
    results: dict[str, str] = {}

    async def run(name: str, check: Check) -> None:
        try:
            await asyncio.wait_for(check(request.app), timeout=2.0)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"error: {type(exc).__name__}"
            log.warning("readiness_check_failed", check=name, error=type(exc).__name__)

    await asyncio.gather(*(run(n, c) for n, c in checks.items()))
    ok = all(v == "ok" for v in results.values())
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "checks": results}, status=200 if ok else 503
    )


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_health_routes(app: web.Application, checks: dict[str, Check]) -> None:
    app[READY_CHECKS] = checks
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
