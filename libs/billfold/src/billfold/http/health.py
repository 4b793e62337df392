"""``/healthz`` (the process is alive), ``/readyz`` (it can do its job), ``/metrics``.

Readiness checks are registered per app: a name and a coroutine that raises on failure,
each declared **required** or **optional** (DESIGN, Principle 1: a service keeps working
without a dependency it only uses as a cache or a transport):

* every check passes: ``200 {"status": "ok"}``;
* only optional checks fail: ``200 {"status": "degraded"}``. The replica stays in the
  load balancer: taking every replica out for a Redis or RabbitMQ outage would turn a
  degradation into an API outage;
* a required check fails: ``503 {"status": "unavailable"}``, and the replica leaves the
  load balancer until it passes again.

The body's ``checks`` always maps every check to ``"ok"`` or ``"error: <type>"``, and
each failing check logs one warning (``readiness_check_failed``, with ``required``) per
probe, so a degraded replica is visible to whoever reads the probe, the logs or the
alerts on them. Each check runs with a short timeout, so a hung dependency counts as a
failure instead of hanging the probe. ``/healthz`` checks nothing: liveness must never
restart a process for a dependency's outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from billfold.logs import get_logger

Check = Callable[[web.Application], Awaitable[None]]
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class ReadyChecks:
    """An app's readiness checks: a failing ``required`` one makes ``/readyz`` 503, a
    failing ``optional`` one only makes it ``degraded`` (still 200)."""

    required: Mapping[str, Check] = field(default_factory=dict)
    optional: Mapping[str, Check] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = set(self.required) & set(self.optional)
        if both:
            raise ValueError(f"checks both required and optional: {sorted(both)}")


READY_CHECKS: web.AppKey[ReadyChecks] = web.AppKey("ready_checks", ReadyChecks)

log = get_logger("billfold.health")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app.get(READY_CHECKS, ReadyChecks())
    results: dict[str, str] = {}

    async def run(name: str, check: Check, required: bool) -> None:
        try:
            await asyncio.wait_for(check(request.app), timeout=CHECK_TIMEOUT)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"error: {type(exc).__name__}"
            log.warning(
                "readiness_check_failed",
                check=name,
                required=required,
                error=type(exc).__name__,
            )

    await asyncio.gather(
        *(run(n, c, True) for n, c in checks.required.items()),
        *(run(n, c, False) for n, c in checks.optional.items()),
    )
    if any(results[name] != "ok" for name in checks.required):
        status, code = "unavailable", 503
    elif any(result != "ok" for result in results.values()):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    # Checks in declaration order (required first), whatever order they finished in.
    ordered = {name: results[name] for name in (*checks.required, *checks.optional)}
    return web.json_response({"status": status, "checks": ordered}, status=code)


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_health_routes(
    app: web.Application,
    *,
    required: Mapping[str, Check],
    optional: Mapping[str, Check] | None = None,
) -> None:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics``; ``/readyz`` runs ``required``
    checks (any failure: 503) and ``optional`` ones (failures: 200 ``degraded``)."""
    app[READY_CHECKS] = ReadyChecks(dict(required), dict(optional or {}))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
