"""RPC in an aiohttp service: ``app.cleanup_ctx`` entries for the client and the server.

Both share ``app[BUS]`` (register ``bus_context`` before them) and, like it, never stop
the app from starting while RabbitMQ is unreachable: the client raises
``ConnectionError`` per call until the bus is connected, and the server starts serving
in the background as soon as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from billfold.bus import BUS
from billfold.db import DB_POOL
from billfold.logs import get_logger
from billfold.rpc import wire
from billfold.rpc.client import RpcClient
from billfold.rpc.server import RpcServer

log = get_logger("billfold.rpc")

RPC_CLIENT: web.AppKey[RpcClient] = web.AppKey("rpc_client", RpcClient)
RPC_SERVER: web.AppKey[RpcServer] = web.AppKey("rpc_server", RpcServer)


def rpc_client_context(
    *, queue: str = wire.BILLING_QUEUE, timeout: float = 5.0
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Sets ``app[RPC_CLIENT]`` (calls with a default deadline of ``timeout`` s)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = RpcClient(app[BUS], queue=queue, timeout=timeout)
        app[RPC_CLIENT] = client
        try:
            yield
        finally:
            await client.close()

    return ctx


def rpc_server_context(
    *,
    schema: str,
    register: Callable[[RpcServer], None],
    queue: str = wire.BILLING_QUEUE,
    prefetch: int = 16,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Sets ``app[RPC_SERVER]`` (its handlers added by ``register``) and serves ``queue``
    once the bus is connected, storing replies in ``{schema}.rpc_calls`` through
    ``app[DB_POOL]``. On cleanup, lets the calls in flight finish first."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        server = RpcServer(
            app[BUS], pool=app[DB_POOL], schema=schema, queue=queue, prefetch=prefetch
        )
        register(server)
        app[RPC_SERVER] = server
        task = asyncio.create_task(_serve_when_connected(server), name=f"rpc-serve-{queue}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.close()

    return ctx


async def _serve_when_connected(server: RpcServer) -> None:
    attempt = 0
    while True:
        await server.bus.wait_connected()
        try:
            await server.start()
        except Exception as exc:  # the connection dropped meanwhile: try again
            attempt += 1
            log.warning("rpc_serve_start_failed", error=type(exc).__name__, attempt=attempt)
            await asyncio.sleep(min(10.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
            continue
        return
