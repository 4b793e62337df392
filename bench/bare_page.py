"""The bare baseline for the portal's pages: an aiohttp handler doing one Redis GET (what
checking a session costs at the least) and returning a static HTML page of a given size.

Same machine, same event loop (uvloop) and Redis client as portal-web, so the ratio
printed by ``portal_render.py`` measures what the portal adds, not the hardware.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import uvloop
from aiohttp import web

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)


def make_app(redis_url: str, key: str, size: int) -> web.Application:
    page = (b"<!doctype html><html><body>" + b"x" * size)[: max(size - 14, 0)] + b"</body></html>"

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = aioredis.from_url(redis_url)
        await client.set(key, b"1")
        app[REDIS] = client
        yield
        await client.aclose()

    async def handler(request: web.Request) -> web.Response:
        await request.app[REDIS].get(key)
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/p/plan", handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--size", type=int, required=True, help="page size in bytes")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        make_app(args.redis_url, args.key, args.size),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
