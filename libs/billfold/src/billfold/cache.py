"""Redis: one client per process, keys always under the configured prefix.

Redis is a cache (DESIGN principle 1): callers treat its errors as a slower path, never as
a failure of the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
from aiohttp import web

from billfold.settings import Settings

Redis = aioredis.Redis

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)


def create_redis(settings: Settings) -> aioredis.Redis:
    # Short timeouts: a cache that hangs is worse than one that is missing.
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
    )


def key(settings: Settings, *parts: str) -> str:
    return settings.redis_prefix + ":".join(parts)


def redis_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = create_redis(settings)
        app[REDIS] = client
        try:
            yield
        finally:
            await client.aclose()

    return ctx


async def check(client: aioredis.Redis) -> None:
    await client.ping()
