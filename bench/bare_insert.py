"""The bare baseline: an aiohttp handler doing one INSERT into Postgres, nothing else.

Same machine, same event loop (uvloop), same pool settings as the services, so the ratio
printed by ``session_create.py`` measures what Billfold adds, not the hardware.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import asyncpg
import uvloop
from aiohttp import web

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)


async def _no_reset(_: asyncpg.Connection) -> None:
    return None


def make_app(dsn: str) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10, reset=_no_reset)
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS bench_bare (id bigserial PRIMARY KEY, "
            "customer text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        app[POOL] = pool
        yield
        await pool.close()

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        row_id = await request.app[POOL].fetchval(
            "INSERT INTO bench_bare (customer) VALUES ($1) RETURNING id", body["customer"]
        )
        return web.json_response({"id": row_id}, status=201)

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/v1/portal_sessions", create)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(make_app(args.dsn), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
