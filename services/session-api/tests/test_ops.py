"""Health, readiness, metrics, dependency outages, and what the logs may never contain.

Readiness: Postgres is required (503 without it); Redis and RabbitMQ are optional (200
``degraded``): the API keeps serving through their outages, so it must stay in the load
balancer. The outages are real: a closed port, or a ``TcpProxy`` cut in front of the
real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp.test_utils import TestClient

from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy
from session_api.app import create_app

from .conftest import LogCapture, Tenant, closed_port, create_session, watch_events


async def _app_without_redis(
    aiohttp_client: Callable[..., Any], bf_settings: Settings
) -> TestClient[Any, Any]:
    settings = bf_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


@asynccontextmanager
async def _proxy_to(url: str, default_port: int) -> AsyncIterator[TcpProxy]:
    """A cuttable proxy in front of the server of ``url`` (open at first)."""
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def _through(proxy: TcpProxy, url: str) -> str:
    """``url`` (credentials, path and query kept) pointing at ``proxy``."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _readyz(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


async def test_healthz_and_readyz(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {
        "status": "ok",
        "checks": {"postgres": "ok", "redis": "ok", "rabbitmq": "ok"},
    }


async def test_readyz_is_degraded_not_503_when_redis_is_down(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, log_capture: LogCapture
) -> None:
    # Redis is a cache (portal-web falls back to Postgres): the replica keeps serving and
    # stays in the load balancer, and the body still names the failing dependency.
    client = await _app_without_redis(aiohttp_client, bf_settings)
    status, body = await _readyz(client)
    assert status == 200, body
    assert body["status"] == "degraded"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["rabbitmq"] == "ok"
    assert body["checks"]["redis"].startswith("error")
    # Liveness does not depend on dependencies.
    assert (await client.get("/healthz")).status == 200


async def test_readyz_is_503_when_postgres_is_down(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, log_capture: LogCapture
) -> None:
    # Postgres is the truth: without it the API cannot answer, so the replica must leave
    # the load balancer. It comes back by itself once the database does.
    async with _proxy_to(bf_settings.database_url, 5432) as proxy:
        settings = bf_settings.model_copy(
            update={"database_url": _through(proxy, bf_settings.database_url)}
        )
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        try:
            status, body = await _readyz(client)
            assert (status, body["status"]) == (200, "ok"), body
            await proxy.cut()
            status, body = await _readyz(client)
            assert status == 503, body
            assert body["status"] == "unavailable"
            assert body["checks"]["postgres"].startswith("error")
            assert body["checks"]["redis"] == "ok"
            assert body["checks"]["rabbitmq"] == "ok"
            assert (await client.get("/healthz")).status == 200

            await proxy.restore()

            async def ready() -> bool:
                return (await _readyz(client))[0] == 200

            await _until(ready)
        finally:
            await client.close()


async def test_starts_and_serves_while_rabbitmq_is_down(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    tenant: Tenant,
    db_pool: asyncpg.Pool,
    logs: LogCapture,
) -> None:
    # A deploy or restart during a broker outage: the app starts, answers, keeps every
    # event in the outbox, and delivers them once the broker is back.
    async with (
        watch_events(
            bf_settings, bus_name="session-api-ops-tests", queue_prefix="test.ops"
        ) as queue,
        _proxy_to(bf_settings.amqp_url, 5672) as proxy,
    ):
        await proxy.cut()
        settings = bf_settings.model_copy(
            update={"amqp_url": _through(proxy, bf_settings.amqp_url)}
        )
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        try:
            status, body = await _readyz(client)
            assert status == 200, body
            assert body == {
                "status": "degraded",
                "checks": {
                    "postgres": "ok",
                    "redis": "ok",
                    "rabbitmq": "error: ConnectionError",
                },
            }
            created = await create_session(client, tenant)
            row = await db_pool.fetchrow(
                "SELECT event_id, routing_key FROM portal.outbox "
                "WHERE payload->'data'->>'session_id' = $1",
                created["id"],
            )
            assert row is not None
            assert row["routing_key"] == "portal_session.created"

            # The relay tries, fails, and keeps it (waited on, not slept on: a busy
            # machine may take longer than any fixed pause before the first attempt).
            async def attempted() -> bool:
                attempts = await db_pool.fetchval(
                    "SELECT attempts FROM portal.outbox WHERE event_id = $1", row["event_id"]
                )
                assert attempts is not None, "the event left the outbox while the broker was down"
                return bool(attempts)

            await _until(attempted)

            await proxy.restore()

            async def ready() -> bool:
                status, body = await _readyz(client)
                return status == 200 and body["status"] == "ok"

            await _until(ready)
            seen: list[str] = []

            async def delivered() -> bool:
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    seen.append(str(message.message_id))
                return row["event_id"] in seen

            await _until(delivered, timeout=30)
            assert not await db_pool.fetchval(
                "SELECT count(*) FROM portal.outbox WHERE event_id = $1", row["event_id"]
            )
        finally:
            await client.close()
    # One warning for the whole outage and one line when it ended, not one per retry.
    bus_lines = [line for line in logs.lines() if line["event"].startswith("bus_")]
    assert [(line["level"], line["event"]) for line in bus_lines] == [
        ("warning", "bus_connect_failed"),
        ("info", "bus_connected"),
    ]
    assert bus_lines[0]["bus"] == "session-api"


async def test_redis_down_still_creates_with_one_warning(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    tenant: Tenant,
    db_pool: asyncpg.Pool,
    logs: LogCapture,
) -> None:
    client = await _app_without_redis(aiohttp_client, bf_settings)
    logs.mark()
    body = await create_session(client, tenant)
    lines = logs.lines()
    warnings = [line for line in lines if line["level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["event"] == "link_index_write_failed"
    assert warnings[0]["session_id"] == body["id"]
    # Postgres has it: portal-web's fallback finds the link.
    assert await db_pool.fetchval(
        "SELECT token_hash FROM portal.portal_sessions WHERE id = $1", body["id"]
    )
    # Revoking with Redis down works too.
    resp = await client.delete(f"/v1/portal_sessions/{body['id']}", headers=tenant.auth)
    assert resp.status == 204


async def test_metrics(client: TestClient[Any, Any], tenant: Tenant) -> None:
    await create_session(client, tenant)
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert 'billfold_http_requests_total{method="POST",route="/v1/portal_sessions",' in text
    assert "billfold_http_request_duration_seconds_bucket" in text
    assert "billfold_outbox_published_total" in text


async def test_logs_never_contain_tokens_or_keys(
    client: TestClient[Any, Any], tenant: Tenant, logs: LogCapture
) -> None:
    created = await create_session(client, tenant)
    # Error paths too: an unknown (but well-formed) key, and a key in a Basic header.
    await client.get("/v1/portal_sessions", headers={"X-API-Key": tenant.key + "x"})
    await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    await client.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    text = logs.text()
    lines = logs.lines()
    # One line per request; the create's line names the session and customer.
    requests = [line for line in lines if line["event"] == "http_request"]
    assert len(requests) == len(lines) == 4
    assert requests[0]["session_id"] == created["id"]
    assert requests[0]["customer"] == tenant.customers[0].id
    assert requests[3]["session_id"] == created["id"]  # the DELETE
    assert all(line["service"] == "session-api" and line["request_id"] for line in requests)
    assert requests[0]["site"] == tenant.site_id
    for secret in (created["token"], tenant.key):
        assert secret not in text
        assert secret[-12:] not in text  # not even a recognisable tail
    assert created["token"] not in str(lines)


async def test_request_id_is_echoed(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.get(
        "/v1/portal_sessions/ps_none", headers={**tenant.auth, "X-Request-Id": "trace-123"}
    )
    assert resp.headers["X-Request-Id"] == "trace-123"
    assert (await resp.json())["error"]["request_id"] == "trace-123"
