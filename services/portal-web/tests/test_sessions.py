"""Browser sessions: every request checks them; revoke and expiry end them at once;
Redis lost (flushed, then stopped) costs speed, never a page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy
from portal_web.app import create_app as create_portal
from portal_web.browser_sessions import Refusal, Refused
from portal_web.state import VALIDATOR
from session_api.app import create_app as create_session_api

from .conftest import Client, Tenant, create_link, enter, texts


async def test_revoke_refuses_next_request_within_100ms_without_rabbitmq(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    tenant: Tenant,
) -> None:
    # Both services point at a broker that does not answer: the revoke must not need it.
    dead_broker = TcpProxy("127.0.0.1", 5672)
    await dead_broker.start()
    await dead_broker.cut()
    settings = bf_settings.model_copy(
        update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{dead_broker.port}/"}
    )
    api: Client = await aiohttp_client(create_session_api(settings))
    portal: Client = await aiohttp_client(create_portal(settings))
    created = await create_link(api, tenant)
    other = await create_link(api, tenant, single_use=False)
    first = await enter(portal, created)
    assert (await portal.get(first)).status == 200
    # A second browser session from the multi-use link, framed (token in the path).
    resp = await portal.get(
        f"/r/{other['token']}", headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False
    )
    framed = resp.headers["Location"]
    assert framed.startswith("/e/bfs_")
    assert (await portal.get(framed + "plan", headers={"Sec-Fetch-Dest": "iframe"})).status == 200

    resp = await api.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    assert resp.status == 204
    started = time.monotonic()
    resp = await portal.get("/p/plan")
    elapsed = time.monotonic() - started
    assert resp.status == 410
    assert "Your session was closed" in texts(await resp.text())
    assert elapsed < 0.1

    resp = await api.delete(f"/v1/portal_sessions/{other['id']}", headers=tenant.auth)
    assert resp.status == 204
    resp = await portal.get(framed + "plan", headers={"Sec-Fetch-Dest": "iframe"})
    assert resp.status == 410
    await dead_broker.stop()


async def test_expiry_ends_browser_session(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    created = await create_link(api, tenant)
    url = await enter(portal, created)
    assert (await portal.get(url)).status == 200  # cached now
    token = next(c.value for c in portal.session.cookie_jar if c.key == "bf_session")
    validator = portal.app[VALIDATOR]
    # From the cache: the entry carries the portal session's expiry.
    later = at_z(created["expires_at"]) + timedelta(seconds=2)  # the API rounds to seconds
    refused = await validator.validate(token, later)
    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.EXPIRED
    # From Postgres, the truth once the cache entry is gone (its TTL is short).
    await db_pool.execute(
        "UPDATE portal.portal_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 second' WHERE id = $1",
        created["id"],
    )
    await validator.forget(token)
    resp = await portal.get("/p/plan")
    assert resp.status == 410
    assert "Your session has expired" in texts(await resp.text())


def at_z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest_asyncio.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_redis_flushed_then_stopped_still_serves(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    tenant: Tenant,
    redis_client: aioredis.Redis,
    redis_proxy: TcpProxy,
) -> None:
    settings = bf_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{redis_proxy.port}/0"}
    )
    api: Client = await aiohttp_client(create_session_api(settings))
    portal: Client = await aiohttp_client(create_portal(settings))
    validator = portal.app[VALIDATOR]
    created = await create_link(api, tenant)
    url = await enter(portal, created)
    assert (await portal.get(url)).status == 200  # fills the cache
    before = validator.fallbacks
    assert (await portal.get(url)).status == 200
    assert validator.fallbacks == before  # served from Redis

    # Flushed: every key of this run's slice is gone (FLUSHDB would hit other runs).
    keys = [k async for k in redis_client.scan_iter(match=bf_settings.redis_prefix + "*")]
    assert keys
    await redis_client.delete(*keys)
    for path in ("/p/plan", "/p/invoices"):
        assert (await portal.get(path)).status == 200
    assert validator.fallbacks > before

    # Stopped: connections refused. Pages still come, from Postgres.
    await redis_proxy.cut()
    for path in ("/p/plan", "/p/invoices", "/p/plan"):
        resp = await portal.get(path)
        assert resp.status == 200, await resp.text()
    # A new link can still be used, and a revoke still refuses at once.
    created2 = await create_link(api, tenant)
    portal.session.cookie_jar.clear()
    await enter(portal, created2)
    assert (await portal.get("/p/plan")).status == 200
    assert (
        await api.delete(f"/v1/portal_sessions/{created2['id']}", headers=tenant.auth)
    ).status == 204
    assert (await portal.get("/p/plan")).status == 410


async def test_a_redis_without_the_check_script_loads_it_and_stays_the_fast_path(
    api: Client, portal: Client, tenant: Tenant
) -> None:
    """A Redis that does not know the session check's script (restarted, SCRIPT FLUSH)
    answers EVALSHA with NOSCRIPT: the script is loaded again and the session is still
    checked in Redis, not sent to Postgres (nor Redis written off for a second)."""
    validator = portal.app[VALIDATOR]
    created = await create_link(api, tenant)
    url = await enter(portal, created)
    assert (await portal.get(url)).status == 200  # fills the cache
    # As if Redis had never seen the script: a SHA it does not know. (SCRIPT FLUSH
    # would drop every other test run's scripts on this shared Redis.)
    real_sha = validator._check.sha
    validator._check.sha = "0" * 40
    before, skipped = validator.fallbacks, validator.redis_skipped
    for _ in range(3):
        assert (await portal.get(url)).status == 200
    assert validator.fallbacks == before  # every check answered by Redis
    assert validator.redis_skipped == skipped
    assert validator._check.sha == real_sha  # loaded, then used by its real SHA


async def test_cookie_token_is_not_accepted_in_path_and_back(
    api: Client, portal: Client, tenant: Tenant
) -> None:
    created = await create_link(api, tenant)
    await enter(portal, created)
    token = next(c.value for c in portal.session.cookie_jar if c.key == "bf_session")
    resp = await portal.get(f"/e/{token}/plan", headers={"Sec-Fetch-Dest": "iframe"})
    assert resp.status == 401


async def test_no_cookie_is_401_page(portal: Client) -> None:
    resp = await portal.get("/p/plan")
    assert resp.status == 401
    assert "Your session has ended" in texts(await resp.text())


async def test_sign_out_needs_csrf(api: Client, portal: Client, tenant: Tenant) -> None:
    created = await create_link(api, tenant)
    await enter(portal, created)
    html = await (await portal.get("/p/plan")).text()
    csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    resp = await portal.post("/p/sign-out", data={"csrf": "wrong"})
    assert resp.status == 403
    assert (await portal.get("/p/plan")).status == 200
    resp = await portal.post("/p/sign-out", data={"csrf": csrf})
    assert resp.status == 200
    assert "You are signed out" in texts(await resp.text())
    await asyncio.sleep(0)
    assert (await portal.get("/p/plan")).status == 401


async def test_framed_url_opened_top_level_is_refused(
    api: Client, portal: Client, tenant: Tenant
) -> None:
    created = await create_link(api, tenant)
    resp = await portal.post(
        f"/r/{created['token']}", headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False
    )
    framed = resp.headers["Location"]
    assert "Set-Cookie" not in resp.headers  # the framed flow never sets a cookie
    ok = await portal.get(framed + "plan", headers={"Sec-Fetch-Dest": "iframe"})
    assert ok.status == 200
    assert f'href="{framed}invoices"' in await ok.text()  # links keep the prefix
    pasted = await portal.get(framed + "plan", headers={"Sec-Fetch-Dest": "document"})
    assert pasted.status == 401


def test_link_index_key_is_session_apis(bf_settings: Settings) -> None:
    # The fast path's revocation signal is session-api's key: the two must never drift.
    from portal_web.browser_sessions import link_key
    from session_api.portal_sessions import link_index

    assert link_key(bf_settings, "ab" * 32) == link_index.key(bf_settings, "ab" * 32)


async def test_hanging_redis_costs_one_timeout_not_one_per_request(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    api: Client,
    tenant: Tenant,
) -> None:
    # A Redis that accepts connections and never answers (a blackholed node).
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = bf_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        portal: Client = await aiohttp_client(create_portal(settings))
        created = await create_link(api, tenant)
        await enter(portal, created)
        validator = portal.app[VALIDATOR]
        started = time.monotonic()
        for _ in range(5):
            assert (await portal.get("/p/plan")).status == 200
        elapsed = time.monotonic() - started
        # Without the back-off each request would wait the client's 0.5 s timeout.
        assert validator.redis_skipped >= 1
        assert elapsed < 2.0, elapsed
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()
