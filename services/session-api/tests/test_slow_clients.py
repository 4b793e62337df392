"""Slow clients hold only their own sockets: never a pool connection another tenant needs.

The bodies are trickled over raw sockets (aiohttp's client would send them at once).
Bounds: a body must arrive within ``body_read_timeout`` (408), and a request waits at
most ``db_acquire_timeout`` for a pool connection (503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from billfold import db
from billfold.settings import Settings
from session_api import openapi
from session_api.app import create_app

from .conftest import (
    Tenant,
    assert_error,
    create_session,
    make_tenant,
    open_raw,
    read_response,
    request_head,
)

SLOW = 12  # more slow requests than the pool has connections, many times over
FAST_ENOUGH = 1.0  # seconds: what another site's request may take meanwhile


def _counting_handler_entries(app: web.Application, entered: list[str]) -> None:
    """Record each request that reached the handlers (innermost middleware)."""

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if "X-Test-Slow" in request.headers:
            entered.append(request.headers["X-Test-Slow"])
        return await handler(request)

    app.middlewares.append(count)


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _timed(request: Awaitable[Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    # A hard stop well past the bound, so a regression fails instead of hanging.
    result = await asyncio.wait_for(request, timeout=10)
    return result, time.perf_counter() - start


def _slow_head(tenant: Tenant, body: bytes, name: str) -> bytes:
    return request_head(
        "POST",
        "/v1/portal_sessions",
        {
            **tenant.auth,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Idempotency-Key": str(uuid.uuid4()),
            "X-Test-Slow": name,
        },
    )


async def test_slow_bodies_of_one_site_do_not_stall_another_site_or_readiness(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    settings = bf_settings.model_copy(
        update={
            "db_pool_min": 1,
            "db_pool_max": 3,
            "body_read_timeout": 60.0,  # the slow bodies stay in flight throughout
            "db_acquire_timeout": 3.0,  # past FAST_ENOUGH: a wait shows as slowness
        }
    )
    app = create_app(settings)
    entered: list[str] = []
    _counting_handler_entries(app, entered)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    slow_site, other_site = await make_tenant(db_pool), await make_tenant(db_pool)
    await create_session(client, slow_site)  # the slow site's key is a known one

    body = json.dumps({"customer": slow_site.customers[0].id}).encode()
    sockets = [await open_raw(client) for _ in range(SLOW)]
    sent = [0] * SLOW
    for i, (_, writer) in enumerate(sockets):
        writer.write(_slow_head(slow_site, body, str(i)) + body[:1])
        sent[i] = 1
    stop_trickling = asyncio.Event()

    async def trickle() -> None:
        # One more byte per socket every 0.25 s, never the last one.
        while not stop_trickling.is_set():
            for i, (_, writer) in enumerate(sockets):
                if sent[i] < len(body) - 1:
                    writer.write(body[sent[i] : sent[i] + 1])
                    sent[i] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_trickling.wait(), 0.25)

    trickler = asyncio.create_task(trickle())
    try:
        # Every slow request is inside the handler, waiting for its body.
        await _until(lambda: len(entered) == SLOW)
        assert all(0 < n < len(body) for n in sent)

        for _ in range(5):
            resp, took = await _timed(
                client.post(
                    "/v1/portal_sessions",
                    json={"customer": other_site.customers[0].id},
                    headers=other_site.auth,
                )
            )
            assert resp.status == 201, await resp.text()
            assert took < FAST_ENOUGH, took
        resp, took = await _timed(
            client.post(
                "/v1/portal_sessions",
                json={"customer": other_site.customers[1].id},
                headers={**other_site.auth, "Idempotency-Key": str(uuid.uuid4())},
            )
        )
        assert resp.status == 201, await resp.text()
        assert took < FAST_ENOUGH, took
        resp, took = await _timed(client.get("/v1/portal_sessions", headers=other_site.auth))
        assert resp.status == 200
        assert took < FAST_ENOUGH, took
        resp, took = await _timed(client.get("/readyz"))
        assert resp.status == 200, await resp.text()
        assert took < FAST_ENOUGH, took
        # Still mid-body, all of them.
        assert all(n < len(body) for n in sent)
    finally:
        stop_trickling.set()
        await trickler

    # The slow requests are served normally once their bodies are complete.
    for i, (_, writer) in enumerate(sockets):
        writer.write(body[sent[i] :])
    for reader, writer in sockets:
        resp = await read_response(reader)
        writer.close()
        assert resp.status == 201, resp.body
    count = await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", slow_site.site_id
    )
    assert count == 1 + SLOW


async def test_a_body_that_does_not_arrive_in_time_is_a_408(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    settings = bf_settings.model_copy(update={"body_read_timeout": 0.5})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(db_pool)
    body = json.dumps({"customer": tenant.customers[0].id}).encode()
    for idempotent in (False, True):
        headers = {
            **tenant.auth,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "X-Request-Id": f"slow-{idempotent}",
        }
        if idempotent:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        reader, writer = await open_raw(client)
        try:
            start = time.perf_counter()
            writer.write(request_head("POST", "/v1/portal_sessions", headers) + body[:-3])
            await writer.drain()
            resp = await read_response(reader)
            took = time.perf_counter() - start
        finally:
            writer.close()
        assert_error(resp.status, resp.json(), 408, "request_timeout")
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert resp.headers["x-request-id"] == f"slow-{idempotent}"
        assert 0.5 <= took < 5, took
    assert "408" in openapi.document()["paths"]["/v1/portal_sessions"]["post"]["responses"]
    assert not await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
    )
    assert not await db_pool.fetchval(
        "SELECT count(*) FROM portal.idempotency_keys WHERE site_id = $1", tenant.site_id
    )


@contextlib.asynccontextmanager
async def _holding_every_connection(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Really saturate ``pool``: take every connection it can give, hold them, give
    them back."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        yield
    finally:
        for conn in held:
            await pool.release(conn)


async def test_no_free_connection_is_a_503_with_retry_after(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    settings = bf_settings.model_copy(
        update={"db_pool_min": 1, "db_pool_max": 2, "db_acquire_timeout": 0.3}
    )
    app = create_app(settings)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    tenant = await make_tenant(db_pool)
    created = await create_session(client, tenant)  # the key's owner is now cached
    sid, cid = created["id"], tenant.customers[0].id
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", "/v1/portal_sessions", "", {"json": {"customer": cid}}),
        (
            "POST",
            "/v1/portal_sessions",
            "",
            {"json": {"customer": cid}, "headers": {"Idempotency-Key": str(uuid.uuid4())}},
        ),
        ("GET", "/v1/portal_sessions", "", {}),
        ("GET", "/v1/portal_sessions/{id}", sid, {}),
        ("DELETE", "/v1/portal_sessions/{id}", sid, {}),
        ("GET", "/v1/customers/{id}", cid, {}),
    ]
    documented = openapi.document()["paths"]
    async with _holding_every_connection(app[db.DB_POOL]):
        for method, template, ident, kwargs in requests:
            headers = {**tenant.auth, **kwargs.pop("headers", {})}
            path = template.replace("{id}", ident)
            resp, took = await _timed(client.request(method, path, headers=headers, **kwargs))
            body = await resp.json()
            assert_error(resp.status, body, 503, "service_busy")
            assert body["error"]["type"] == "api_error"
            assert resp.headers["Retry-After"] == "1"
            assert 0.3 <= took < 3, (method, path, took)
            assert "503" in documented[template][method.lower()]["responses"]
    # Nothing was written meanwhile, and the pool serves again once it is free.
    count = await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
    )
    assert count == 1
    assert (
        await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    ).status == 200
    await create_session(client, tenant)
