"""Who may call: the key transports, and every way a key is refused."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from billfold.settings import Settings
from session_api.app import create_app
from session_api.keys import repository as keys

from .conftest import Tenant, assert_error, create_session, make_tenant, without_broker

ENDPOINTS = [
    ("POST", "/v1/portal_sessions"),
    ("GET", "/v1/portal_sessions"),
    ("GET", "/v1/portal_sessions/ps_x"),
    ("DELETE", "/v1/portal_sessions/ps_x"),
    ("GET", "/v1/customers/cu_x"),
]


def _basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("transport", ["bearer", "basic", "x-api-key"])
async def test_key_transports(client: TestClient[Any, Any], tenant: Tenant, transport: str) -> None:
    headers = {
        "bearer": {"Authorization": f"Bearer {tenant.key}"},
        "basic": {"Authorization": _basic(tenant.key)},
        "x-api-key": {"X-API-Key": tenant.key},
    }[transport]
    resp = await client.post(
        "/v1/portal_sessions", json={"customer": tenant.customers[0].id}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    resp = await client.get("/v1/portal_sessions", headers=headers)
    assert resp.status == 200


async def _refused(
    client: TestClient[Any, Any], headers: dict[str, str], message_part: str | None = None
) -> None:
    for method, path in ENDPOINTS:
        resp = await client.request(method, path, headers=headers, json={})
        body = await resp.json()
        assert_error(resp.status, body, 401, "api_key_invalid")
        assert body["error"]["type"] == "authentication_error"
        assert "WWW-Authenticate" in resp.headers
        if message_part:
            assert message_part in body["error"]["message"]


async def test_no_key(client: TestClient[Any, Any]) -> None:
    await _refused(client, {}, "No API key")


async def test_publishable_key(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    async with db_pool.acquire() as conn:
        _, pk = await keys.create(conn, tenant.site_id, "publishable")
    await _refused(client, {"Authorization": f"Bearer {pk}"}, "Publishable")
    await _refused(client, {"X-API-Key": pk}, "Publishable")


async def test_revoked_key_stops_at_once(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    # A create first: it warms the in-process owner cache of the create path.
    await create_session(client, tenant)
    assert (await client.get("/v1/portal_sessions", headers=tenant.auth)).status == 200
    async with db_pool.acquire() as conn:
        await keys.revoke(conn, tenant.key_id)
    await _refused(client, tenant.auth, "revoked")
    count = await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
    )
    assert count == 1  # the refused create wrote nothing


@pytest.mark.parametrize("idempotent", [False, True], ids=["group-commit", "idempotency-key"])
async def test_valid_create_with_cached_key_revoked_meanwhile(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    db_pool: asyncpg.Pool,
    idempotent: bool,
) -> None:
    """The owner cache still holds the key, the request is valid: only the create
    statement's own "is the key live" check can refuse it, and it writes nothing.

    RabbitMQ is unreachable for this app, so every event it writes stays in the outbox
    and "no event" is a count, not a race with the relay."""
    tenant = await make_tenant(db_pool)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(without_broker(bf_settings)))
    warm = await create_session(client, tenant)  # puts the key's owner in the cache
    async with db_pool.acquire() as conn:
        await keys.revoke(conn, tenant.key_id)
    headers = dict(tenant.auth)
    idem = str(uuid.uuid4())
    if idempotent:
        headers["Idempotency-Key"] = idem
    resp = await client.post(
        "/v1/portal_sessions", json={"customer": tenant.customers[1].id}, headers=headers
    )
    body = await resp.json()
    assert_error(resp.status, body, 401, "api_key_invalid")
    assert "revoked" in body["error"]["message"]
    sessions = await db_pool.fetch(
        "SELECT id FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
    )
    assert [r["id"] for r in sessions] == [warm["id"]]
    events = await db_pool.fetch(
        "SELECT ordering_key FROM portal.outbox WHERE payload->>'site_id' = $1", tenant.site_id
    )
    assert [r["ordering_key"] for r in events] == [warm["id"]]
    assert not await db_pool.fetchval(
        "SELECT count(*) FROM portal.idempotency_keys WHERE site_id = $1 AND key = $2",
        tenant.site_id,
        idem,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer bf_sk_doesnotexist0000000000000000000000000000"},
        {"Authorization": "Bearer sk_test_123"},
        {"Authorization": "Bearer "},
        {"Authorization": "Token abc"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": _basic("")},
        {"X-API-Key": "garbage"},
        {"X-API-Key": "bf_sk_caf\u00e9"},
    ],
)
async def test_bad_credentials(client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    await _refused(client, headers)


async def test_undecodable_key_bytes(client: TestClient[Any, Any]) -> None:
    """Header bytes that are not UTF-8 reach the app as surrogates: still a 401."""
    for method, path in ENDPOINTS:
        resp = await client.request(
            method,
            path,
            headers={
                "X-API-Key": "bf_sk_\udcff\udcfe".encode("utf-8", "surrogateescape").decode(
                    "latin-1"
                )
            },
        )
        assert_error(resp.status, await resp.json(), 401, "api_key_invalid")


async def test_basic_with_password_uses_user(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.get(
        "/v1/portal_sessions", headers={"Authorization": _basic(tenant.key, "ignored")}
    )
    assert resp.status == 200


async def test_scoped_key(client: TestClient[Any, Any], db_pool: asyncpg.Pool) -> None:
    reader = await make_tenant(db_pool, scopes=["portal_sessions:read"])
    resp = await client.get("/v1/portal_sessions", headers=reader.auth)
    assert resp.status == 200
    resp = await client.post(
        "/v1/portal_sessions", json={"customer": reader.customers[0].id}, headers=reader.auth
    )
    body = await resp.json()
    assert_error(resp.status, body, 403, "insufficient_scope")
    assert body["error"]["type"] == "permission_error"
    resp = await client.get(f"/v1/customers/{reader.customers[0].id}", headers=reader.auth)
    assert resp.status == 403


async def test_auth_is_checked_before_input(client: TestClient[Any, Any], tenant: Tenant) -> None:
    """An anonymous caller learns nothing from validation errors."""
    resp = await client.post(
        "/v1/portal_sessions", data=b"{bad json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 401
    await create_session(client, tenant)  # and the same body shape works with a key
