"""Health, readiness, metrics, Redis outages, and what the logs may never contain."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from billfold.settings import Settings
from session_api.app import create_app

from .conftest import LogCapture, Tenant, create_session


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _app_without_redis(
    aiohttp_client: Callable[..., Any], bf_settings: Settings
) -> TestClient[Any, Any]:
    settings = bf_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


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


async def test_readyz_503_when_redis_is_down(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, log_capture: LogCapture
) -> None:
    client = await _app_without_redis(aiohttp_client, bf_settings)
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["rabbitmq"] == "ok"
    assert body["checks"]["redis"].startswith("error")
    # Liveness does not depend on dependencies.
    assert (await client.get("/healthz")).status == 200


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
