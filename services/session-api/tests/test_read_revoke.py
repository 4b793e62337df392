"""GET one, list (filters, pagination), DELETE, and customers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from billfold.settings import Settings

from .conftest import (
    Tenant,
    assert_error,
    create_session,
    get_session,
    link_key,
    make_tenant,
)

READ_KEYS = {
    "id",
    "object",
    "customer",
    "status",
    "single_use",
    "sections",
    "flow",
    "return_url",
    "locale",
    "send_email",
    "expires_at",
    "created_at",
    "used_at",
    "revoked_at",
}


async def _expire(pool: asyncpg.Pool, session_id: str) -> None:
    await pool.execute(
        "UPDATE portal.portal_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 hour' WHERE id = $1",
        session_id,
    )


async def test_get_never_returns_token(client: TestClient[Any, Any], tenant: Tenant) -> None:
    created = await create_session(client, tenant, return_url="https://x.example/back")
    resp = await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    body = await resp.json()
    assert resp.status == 200
    assert set(body) == READ_KEYS
    assert created["token"] not in await resp.text()
    for k in READ_KEYS - {"used_at", "revoked_at"}:
        assert body[k] == created[k], k
    assert body["used_at"] is None
    assert body["revoked_at"] is None


async def test_status_derivation(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    used = await create_session(client, tenant)
    multi = await create_session(client, tenant, single_use=False)
    expired = await create_session(client, tenant)
    await db_pool.execute(
        "UPDATE portal.portal_sessions SET used_at = now(), used_ip = '192.0.2.1' "
        "WHERE id = ANY($1::text[])",
        [used["id"], multi["id"]],
    )
    await _expire(db_pool, expired["id"])
    statuses = {}
    for s in (used, multi, expired):
        resp = await client.get(f"/v1/portal_sessions/{s['id']}", headers=tenant.auth)
        statuses[s["id"]] = (await resp.json())["status"]
    assert statuses == {used["id"]: "used", multi["id"]: "active", expired["id"]: "expired"}


@pytest.mark.parametrize("ident", ["ps_nope", "x" * 300, "ps_%00"])
async def test_get_unknown_is_404(client: TestClient[Any, Any], tenant: Tenant, ident: str) -> None:
    resp = await client.get(f"/v1/portal_sessions/{ident}", headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 404, "resource_missing")


async def test_list_pagination(client: TestClient[Any, Any], tenant: Tenant) -> None:
    ids = [(await create_session(client, tenant))["id"] for _ in range(5)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": "2"}
        if after:
            query["starting_after"] = after
        resp = await client.get("/v1/portal_sessions", params=query, headers=tenant.auth)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["object"] == "list"
        assert all("token" not in s and "url" not in s for s in body["data"])
        seen += [s["id"] for s in body["data"]]
        pages += 1
        if not body["has_more"]:
            break
        after = body["data"][-1]["id"]
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, each exactly once


async def test_list_filters(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    a = await create_session(client, tenant)
    b = await create_session(client, tenant, customer=tenant.customers[1].id)
    old = await create_session(client, tenant)
    await _expire(db_pool, old["id"])

    async def ids(**query: str) -> list[str]:
        resp = await client.get("/v1/portal_sessions", params=query, headers=tenant.auth)
        assert resp.status == 200
        return [s["id"] for s in (await resp.json())["data"]]

    assert await ids() == [b["id"], a["id"]]
    # _expire moved old's created_at back two hours: it sorts last.
    assert await ids(include_expired="true") == [b["id"], a["id"], old["id"]]
    # customer accepts the Billfold, Stripe or external id.
    assert await ids(customer=tenant.customers[1].id) == [b["id"]]
    assert await ids(customer=str(tenant.customers[1].stripe_id)) == [b["id"]]
    assert await ids(customer="ext-0", include_expired="true") == [a["id"], old["id"]]
    assert await ids(customer="nobody") == []


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ({"limit": "0"}, "parameter_invalid", "limit"),
        ({"limit": "101"}, "parameter_invalid", "limit"),
        ({"limit": "ten"}, "parameter_invalid", "limit"),
        ({"include_expired": "sometimes"}, "parameter_invalid", "include_expired"),
        ({"starting_after": "ps_unknown"}, "resource_missing", "starting_after"),
        ({"status": "active"}, "parameter_unknown", "status"),
    ],
)
async def test_list_bad_queries(
    client: TestClient[Any, Any], tenant: Tenant, query: dict[str, str], code: str, param: str
) -> None:
    resp = await client.get("/v1/portal_sessions", params=query, headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 400, code, param)


async def test_list_limit_100_is_fine(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.get("/v1/portal_sessions", params={"limit": "100"}, headers=tenant.auth)
    assert resp.status == 200


async def test_revoke(
    client: TestClient[Any, Any],
    tenant: Tenant,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    created = await create_session(client, tenant)
    key = link_key(bf_settings, created["token"])
    assert await redis_client.exists(key)
    resp = await client.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    assert resp.status == 204
    assert await resp.read() == b""
    assert not await redis_client.exists(key)
    got = await (
        await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    ).json()
    assert got["status"] == "revoked"
    assert got["revoked_at"] is not None
    # Revoking again is fine and changes nothing.
    again = await client.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    assert again.status == 204
    got2 = await (
        await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    ).json()
    assert got2["revoked_at"] == got["revoked_at"]
    # Revoked (unexpired) sessions stay listed, with their status.
    listed = await (await client.get("/v1/portal_sessions", headers=tenant.auth)).json()
    assert [(s["id"], s["status"]) for s in listed["data"]] == [(created["id"], "revoked")]


@asynccontextmanager
async def _outbox_refuses(
    pool: asyncpg.Pool, routing_key: str, ordering_key: str
) -> AsyncIterator[None]:
    """A real database fault: while inside, inserting that one event into the outbox
    raises (a trigger on ``portal.outbox``, scoped to the event so nothing else fails)."""
    name = f"test_refuse_{secrets.token_hex(6)}"
    await pool.execute(
        f"CREATE FUNCTION portal.{name}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'outbox refused by test'; END $$"
    )
    await pool.execute(
        f"CREATE TRIGGER {name} BEFORE INSERT ON portal.outbox FOR EACH ROW "
        f"WHEN (NEW.routing_key = '{routing_key}' AND NEW.ordering_key = '{ordering_key}') "
        f"EXECUTE FUNCTION portal.{name}()"
    )
    try:
        yield
    finally:
        await pool.execute(f"DROP TRIGGER {name} ON portal.outbox")
        await pool.execute(f"DROP FUNCTION portal.{name}()")


async def test_revoke_does_not_commit_without_its_event(
    client: TestClient[Any, Any],
    tenant: Tenant,
    db_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    """The revoke and its event are one transaction: when the event cannot be written,
    the session stays active (and its link stays indexed), and no event exists."""
    created = await create_session(client, tenant)
    key = link_key(bf_settings, created["token"])
    async with _outbox_refuses(db_pool, "portal_session.revoked", created["id"]):
        resp = await client.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
        # A dependency failure, not bad input: the one path to a 500.
        assert_error(resp.status, await resp.json(), 500, "internal_error")
        row = await db_pool.fetchrow(
            "SELECT revoked_at FROM portal.portal_sessions WHERE id = $1", created["id"]
        )
        assert row is not None
        assert row["revoked_at"] is None
        assert (await get_session(client, tenant, created["id"]))["status"] == "active"
        assert not await db_pool.fetchval(
            "SELECT count(*) FROM portal.outbox WHERE ordering_key = $1 AND routing_key = $2",
            created["id"],
            "portal_session.revoked",
        )
        assert await redis_client.exists(key)
    # Once the outbox takes it, the same request revokes, with its event.
    resp = await client.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    assert resp.status == 204
    assert (await get_session(client, tenant, created["id"]))["status"] == "revoked"
    assert not await redis_client.exists(key)


async def test_revoke_unknown_is_404(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.delete("/v1/portal_sessions/ps_missing", headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 404, "resource_missing")


async def test_customer_lookup(client: TestClient[Any, Any], tenant: Tenant) -> None:
    c = tenant.customers[0]
    for ident in (c.id, c.stripe_id, c.external_id):
        resp = await client.get(f"/v1/customers/{ident}", headers=tenant.auth)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["id"] == c.id
        assert body["object"] == "customer"
        assert body["stripe_id"] == c.stripe_id
        assert body["external_id"] == c.external_id
        assert body["email"] == c.email
        assert body["name"] == c.name


async def test_customer_unknown_or_deleted_is_404(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    resp = await client.get("/v1/customers/cu_nobody", headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 404, "resource_missing")
    await db_pool.execute(
        "UPDATE mirror.customers SET deleted_at = now() WHERE id = $1", tenant.customers[1].id
    )
    resp = await client.get(f"/v1/customers/{tenant.customers[1].id}", headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 404, "resource_missing")


async def test_cross_site_isolation(
    client: TestClient[Any, Any], tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await create_session(client, tenant)
    theirs = other_tenant.auth
    for method, path in [
        ("GET", f"/v1/portal_sessions/{mine['id']}"),
        ("DELETE", f"/v1/portal_sessions/{mine['id']}"),
        ("GET", f"/v1/customers/{tenant.customers[0].id}"),
        ("GET", f"/v1/customers/{tenant.customers[0].stripe_id}"),
        ("GET", f"/v1/customers/{tenant.customers[0].external_id}"),
    ]:
        resp = await client.request(method, path, headers=theirs)
        if path.endswith(str(tenant.customers[0].external_id)):
            # Both sites have a customer "ext-0": the other site sees its own one.
            assert (await resp.json())["id"] == other_tenant.customers[0].id
            continue
        assert_error(resp.status, await resp.json(), 404, "resource_missing")
    listed = await (await client.get("/v1/portal_sessions", headers=theirs)).json()
    assert listed["data"] == []
    resp = await client.get(
        "/v1/portal_sessions", params={"starting_after": mine["id"]}, headers=theirs
    )
    assert_error(resp.status, await resp.json(), 400, "resource_missing", "starting_after")
    # The other site's DELETE did nothing.
    got = await (await client.get(f"/v1/portal_sessions/{mine['id']}", headers=tenant.auth)).json()
    assert got["status"] == "active"


async def test_site_without_sessions_lists_empty(
    client: TestClient[Any, Any], db_pool: asyncpg.Pool
) -> None:
    fresh = await make_tenant(db_pool, n_customers=0)
    body = await (await client.get("/v1/portal_sessions", headers=fresh.auth)).json()
    assert body == {"object": "list", "url": "/v1/portal_sessions", "data": [], "has_more": False}
