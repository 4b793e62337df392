"""The bare webhook baseline: verify the Stripe signature, INSERT the raw event, answer.

What any webhook receiver must do at the least, on the same machine, event loop (uvloop)
and pool settings as billing-sync, so the ratio ``webhook_ingest.py`` prints measures what
billing-sync adds (site lookup and secret decryption, dedupe, NOTIFY, logs, metrics), not
the hardware. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

import asyncpg
import orjson
import stripe
import uvloop
from aiohttp import web

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)


async def _no_reset(_: asyncpg.Connection) -> None:
    return None


def make_app(dsn: str, secret: str) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10, reset=_no_reset)
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS bench_bare_webhooks (id text PRIMARY KEY, "
            "payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
        )
        app[POOL] = pool
        yield
        await pool.close()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        text = body.decode("utf-8")
        try:
            # The same verification as billing-sync's (signature and age, then one parse).
            stripe.WebhookSignature.verify_header(
                text, request.headers.get("Stripe-Signature", ""), secret, 300
            )
            event = orjson.loads(body)
        except (stripe.SignatureVerificationError, ValueError):
            return web.json_response({"error": "signature"}, status=400)
        await request.app[POOL].execute(
            "INSERT INTO bench_bare_webhooks (id, payload) VALUES ($1, $2::text::jsonb) "
            "ON CONFLICT (id) DO NOTHING",
            event["id"],
            text,
        )
        return web.json_response({"received": True})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1024 * 1024)
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/stripe/webhooks/{site}", receive)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    # From the environment, not argv: command lines are visible to every local user.
    secret = os.environ["BENCH_WEBHOOK_SECRET"]
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        make_app(args.dsn, secret),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
