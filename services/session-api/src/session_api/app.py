"""The session-api aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from billfold import bus, cache, db, outbox
from billfold.http import malformed
from billfold.http.health import add_health_routes
from billfold.http.middlewares import standard_middlewares
from billfold.logs import get_logger
from billfold.settings import Settings
from session_api import idempotency, openapi
from session_api.auth import OWNER_CACHE, OwnerCache
from session_api.customers.routes import routes as customer_routes
from session_api.portal_sessions import expiry
from session_api.portal_sessions.batcher import CreateBatcher
from session_api.portal_sessions.link_index import Writer
from session_api.portal_sessions.routes import routes as session_routes
from session_api.state import CREATE_BATCHER, DB, LINK_INDEX, SETTINGS

SERVICE = "session-api"
IDEMPOTENCY_SWEEP_EVERY = 600.0

log = get_logger("session_api.app")


async def _check_postgres(app: web.Application) -> None:
    await db.check(app[db.DB_POOL])


async def _check_redis(app: web.Application) -> None:
    await cache.check(app[cache.REDIS])


async def _check_rabbitmq(app: web.Application) -> None:
    await app[bus.BUS].check()


async def _bounded_pool(app: web.Application) -> AsyncIterator[None]:
    app[DB] = db.BoundedPool(app[db.DB_POOL], app[SETTINGS].db_acquire_timeout)
    yield


async def _link_index_writer(app: web.Application) -> AsyncIterator[None]:
    app[LINK_INDEX] = Writer(app[cache.REDIS])
    yield


async def _create_batcher(app: web.Application) -> AsyncIterator[None]:
    batcher = CreateBatcher(app[DB])
    app[CREATE_BATCHER] = batcher
    yield
    await batcher.close()


def _every(
    name: str,
    seconds: Callable[[web.Application], float],
    work: Callable[[asyncpg.Pool], Awaitable[int]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry running ``work`` on the app's pool now and then every
    ``seconds(app)`` seconds. A failed round logs a warning; the next one retries."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    done = await work(app[db.DB_POOL])
                    if done:
                        log.info(f"{name}_swept", count=done)
                except Exception as exc:  # requests are unaffected
                    log.warning(f"{name}_sweep_failed", error=type(exc).__name__)
                await asyncio.sleep(seconds(app))

        # An empty context: no request's log context (request id) leaks into the task.
        task = asyncio.create_task(loop(), name=f"{name}-sweeper", context=contextvars.Context())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


# Idempotency records past their 24 h window are deleted every few minutes.
_idempotency_sweeper = _every("idempotency", lambda _: IDEMPOTENCY_SWEEP_EVERY, idempotency.sweep)
# Sessions whose expiry passed get their portal_session.expired (once, any replica).
_expiry_sweeper = _every("expiry", lambda app: app[SETTINGS].expiry_sweep_interval, expiry.sweep)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=standard_middlewares(
            SERVICE, settings.max_body_bytes, settings.trusted_proxy_networks
        ),
        client_max_size=settings.max_body_bytes,
    )
    malformed.install(app)  # parser-refused requests: JSON 400, no echo of the key
    app[SETTINGS] = settings
    app[OWNER_CACHE] = OwnerCache()
    app.cleanup_ctx.extend(
        [
            db.pool_context(settings),
            _bounded_pool,
            cache.redis_context(settings),
            _link_index_writer,
            _create_batcher,
            # Starts even while RabbitMQ is unreachable (connects in the background).
            bus.bus_context(settings, name=SERVICE),
            # After the bus: the relay publishes through app[BUS].
            outbox.relay_context(settings, "portal"),
            _idempotency_sweeper,
            _expiry_sweeper,
        ]
    )
    # Postgres is the truth: without it the API cannot serve, so the replica leaves the
    # load balancer. Redis (a cache: Postgres fallback) and RabbitMQ (transport: events
    # wait in the outbox) only degrade it; /readyz still says so in its body.
    add_health_routes(
        app,
        required={"postgres": _check_postgres},
        optional={"redis": _check_redis, "rabbitmq": _check_rabbitmq},
    )
    app.router.add_routes(session_routes)
    app.router.add_routes(customer_routes)
    app.router.add_get("/openapi.json", openapi.handler)
    return app
