"""The portal-web aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from billfold import bus, cache, db, outbox
from billfold.http import malformed
from billfold.http.health import add_health_routes
from billfold.http.middlewares import standard_middlewares
from billfold.rpc import BILLING_QUEUE, RPC_CLIENT, rpc_client_context
from billfold.settings import Settings
from portal_web import (
    action_routes,
    api_routes,
    api_writes,
    branding,
    dropin_script,
    i18n,
    link_routes,
    portal_routes,
    sign_in_routes,
)
from portal_web.actions import ACTIONS, Actions
from portal_web.browser_sessions import Validator
from portal_web.code_resolver import resolver_context
from portal_web.hosts import DOMAINS, DomainCache
from portal_web.links import SCHEMA
from portal_web.middleware import portal_middleware
from portal_web.mirror_cache import MIRROR_CACHE, MirrorCache, mirror_cache_context
from portal_web.pages import PAGE_MEMO, PageMemo
from portal_web.sign_in_limits import SIGN_IN_POLICY, Policy, limiter_context
from portal_web.sites import SiteCache
from portal_web.state import SETTINGS, SITES, VALIDATOR

SERVICE = "portal-web"
HERE = Path(__file__).parent
STATIC_MAX_AGE = 3600


async def _check_postgres(app: web.Application) -> None:
    await db.check(app[db.DB_POOL])


async def _check_redis(app: web.Application) -> None:
    await cache.check(app[cache.REDIS])


async def _check_rabbitmq(app: web.Application) -> None:
    await app[bus.BUS].check()


async def _validator(app: web.Application) -> AsyncIterator[None]:
    app[VALIDATOR] = Validator(app[SETTINGS], app[cache.REDIS], app[db.DB_POOL])
    yield


async def _actions(app: web.Application) -> AsyncIterator[None]:
    app[ACTIONS] = Actions(
        app[db.DB_POOL],
        app[RPC_CLIENT],
        timeout=app[SETTINGS].rpc_timeout,
        mirror_changed=app[MIRROR_CACHE].changed,
    )
    yield


async def brand_css(request: web.Request) -> web.StreamResponse:
    site = await request.app[SITES].get(request.app[db.DB_POOL], request.match_info["site"])
    if site is None:
        raise web.HTTPNotFound
    response = web.Response(text=branding.css(site), content_type="text/css")
    if request.match_info["version"] == branding.version(site):
        response.headers["Cache-Control"] = "public, max-age=86400, immutable"
    else:
        response.headers["Cache-Control"] = "no-cache"
    return response


async def _static_cache(_: web.Request, response: web.StreamResponse) -> None:
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE}"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every output escaped; a customer named <script> is text
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship with the code: never stat() them again on every render.
        auto_reload=False,
    )
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["_"] = i18n.template_gettext  # the same result, one call instead of three
    return env


def create_app(settings: Settings, *, rpc_queue: str = BILLING_QUEUE) -> web.Application:
    """The app. ``rpc_queue``: billing-sync's call queue (tests give each run its own)."""
    app = web.Application(
        middlewares=[
            *standard_middlewares(
                SERVICE, settings.max_body_bytes, settings.trusted_proxy_networks
            ),
            portal_middleware(settings),
        ],
        client_max_size=settings.max_body_bytes,
    )
    malformed.install(app)
    app[SETTINGS] = settings
    app[SITES] = SiteCache()
    app[PAGE_MEMO] = PageMemo()
    app[MIRROR_CACHE] = MirrorCache()
    app[DOMAINS] = DomainCache()
    app[SIGN_IN_POLICY] = Policy.from_environment()  # tests may replace it before start
    env = templates()
    app[aiohttp_jinja2.APP_KEY] = env
    app.on_response_prepare.append(_static_cache)
    app.cleanup_ctx.extend(
        [
            db.pool_context(settings),
            # Mirror reads from memory while billing-sync's triggers say nothing changed.
            mirror_cache_context(settings),
            cache.redis_context(settings),
            _validator,
            # Starts even while RabbitMQ is unreachable: portal_session.used waits in
            # the outbox; no page depends on the broker.
            bus.bus_context(settings, name=SERVICE),
            outbox.relay_context(settings, SCHEMA),
            # Actions call billing-sync on the same bus; while it is unreachable an action
            # says "could not complete, try again" (reads never need it).
            rpc_client_context(queue=rpc_queue, timeout=settings.rpc_timeout),
            _actions,
            limiter_context(settings),
            resolver_context(settings, lambda a: a[SIGN_IN_POLICY].resolver),
        ]
    )
    # Postgres is the truth (links, sessions, the mirror): required. Redis (a cache with
    # a Postgres fallback) and RabbitMQ (events wait in the outbox) only degrade us.
    add_health_routes(
        app,
        required={"postgres": _check_postgres},
        optional={"redis": _check_redis, "rabbitmq": _check_rabbitmq},
    )
    app.router.add_routes(link_routes.routes)
    app.router.add_routes(sign_in_routes.routes)
    portal_routes.add_routes(app)
    action_routes.add_routes(app)
    api_routes.add_routes(app)
    api_writes.add_routes(app)
    dropin_script.add_routes(app)
    app.router.add_get("/brand/{site}/{version}.css", brand_css)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    return app
