"""Idempotency-Key on POST /v1/portal_sessions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from session_api import idempotency
from session_api.customers import repository as customers
from session_api.keys import repository as keys

from .conftest import Tenant, assert_error


async def _post(
    client: TestClient[Any, Any], tenant: Tenant, idem: str, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    resp = await client.post(
        "/v1/portal_sessions", headers={**tenant.auth, "Idempotency-Key": idem}, **kwargs
    )
    return resp.status, await resp.json(), resp.headers


async def _count(pool: asyncpg.Pool, tenant: Tenant) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
        )
    )


async def test_same_key_same_body_replays(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    params = {"customer": tenant.customers[0].id, "ttl_seconds": 300}
    s1, b1, h1 = await _post(client, tenant, idem, json=params)
    s2, b2, h2 = await _post(client, tenant, idem, json=params)
    assert s1 == s2 == 201
    assert b1 == b2  # token and url included
    assert "Idempotent-Replayed" not in h1
    assert h2["Idempotent-Replayed"] == "true"
    assert await _count(db_pool, tenant) == 1
    # The equivalent form body is the same request.
    s3, b3, _ = await _post(
        client,
        tenant,
        idem,
        data={"customer": tenant.customers[0].id, "ttl_seconds": "300"},
    )
    assert (s3, b3) == (201, b1)


async def test_stored_response_keeps_no_readable_token(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    _, body, _ = await _post(client, tenant, idem, json={"customer": tenant.customers[0].id})
    stored = await db_pool.fetchval(
        "SELECT response_body FROM portal.idempotency_keys WHERE site_id = $1 AND key = $2",
        tenant.site_id,
        idem,
    )
    assert stored
    assert body["token"].encode() not in bytes(stored)
    assert body["token"][4:].encode() not in bytes(stored)


async def test_same_key_other_body_conflicts(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    s1, _, _ = await _post(client, tenant, idem, json={"customer": tenant.customers[0].id})
    s2, b2, _ = await _post(client, tenant, idem, json={"customer": tenant.customers[1].id})
    assert s1 == 201
    assert_error(s2, b2, 409, "idempotency_key_in_use")
    assert b2["error"]["type"] == "idempotency_error"
    assert await _count(db_pool, tenant) == 1


async def test_concurrent_requests_create_once(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    results = await asyncio.gather(
        *(_post(client, tenant, idem, json={"customer": tenant.customers[0].id}) for _ in range(8))
    )
    assert {status for status, _, _ in results} == {201}
    assert len({body["id"] for _, body, _ in results}) == 1
    assert len({body["token"] for _, body, _ in results}) == 1
    assert sum(1 for _, _, h in results if "Idempotent-Replayed" not in h) == 1
    assert await _count(db_pool, tenant) == 1


async def test_errors_are_not_stored(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    """A customer not mirrored yet: retrying with the same key succeeds once it is."""
    idem = str(uuid.uuid4())
    params = {"customer_external_id": "late-arrival"}
    status, body, _ = await _post(client, tenant, idem, json=params)
    assert_error(status, body, 400, "resource_missing")
    async with db_pool.acquire() as conn:
        await customers.upsert(
            conn, tenant.site_id, external_id="late-arrival", email="l@example.com", name="L"
        )
    status, body, _ = await _post(client, tenant, idem, json=params)
    assert status == 201, body


async def test_keys_are_per_site_and_per_api_key(
    client: TestClient[Any, Any], tenant: Tenant, other_tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    s1, b1, _ = await _post(client, tenant, idem, json={"customer": tenant.customers[0].id})
    s2, b2, _ = await _post(
        client, other_tenant, idem, json={"customer": other_tenant.customers[0].id}
    )
    assert s1 == s2 == 201
    assert b1["id"] != b2["id"]
    # Another key of the same site cannot replay (it could not decrypt the token).
    async with db_pool.acquire() as conn:
        _, second = await keys.create(conn, tenant.site_id, "secret")
    resp = await client.post(
        "/v1/portal_sessions",
        json={"customer": tenant.customers[0].id},
        headers={"Authorization": f"Bearer {second}", "Idempotency-Key": idem},
    )
    assert_error(resp.status, await resp.json(), 409, "idempotency_key_in_use")


async def test_expired_record_is_reclaimed(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    _, b1, _ = await _post(client, tenant, idem, json={"customer": tenant.customers[0].id})
    await db_pool.execute(
        "UPDATE portal.idempotency_keys SET created_at = now() - interval '25 hours' "
        "WHERE site_id = $1 AND key = $2",
        tenant.site_id,
        idem,
    )
    s2, b2, h2 = await _post(client, tenant, idem, json={"customer": tenant.customers[1].id})
    assert s2 == 201
    assert b2["id"] != b1["id"]
    assert "Idempotent-Replayed" not in h2


async def test_bad_idempotency_key(client: TestClient[Any, Any], tenant: Tenant) -> None:
    status, body, _ = await _post(
        client, tenant, "k" * 256, json={"customer": tenant.customers[0].id}
    )
    assert_error(status, body, 400, "parameter_invalid", "Idempotency-Key")


async def test_revoked_key_cannot_replay(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    idem = str(uuid.uuid4())
    params = {"customer": tenant.customers[0].id}
    status, _, _ = await _post(client, tenant, idem, json=params)
    assert status == 201
    async with db_pool.acquire() as conn:
        await keys.revoke(conn, tenant.key_id)
    status, body, _ = await _post(client, tenant, idem, json=params)
    assert_error(status, body, 401, "api_key_invalid")
    assert "token" not in body


async def test_sweep_deletes_only_expired_records(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    for idem in (old, fresh):
        status, _, _ = await _post(client, tenant, idem, json={"customer": tenant.customers[0].id})
        assert status == 201
    await db_pool.execute(
        "UPDATE portal.idempotency_keys SET created_at = now() - interval '25 hours' "
        "WHERE site_id = $1 AND key = $2",
        tenant.site_id,
        old,
    )
    assert await idempotency.sweep(db_pool) >= 1
    left = await db_pool.fetch(
        "SELECT key FROM portal.idempotency_keys WHERE site_id = $1", tenant.site_id
    )
    assert [r["key"] for r in left] == [fresh]
