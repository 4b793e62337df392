"""POST /v1/portal_sessions: the happy paths and what is stored."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from billfold import tokens
from billfold.sections import SECTION_DEFAULTS
from billfold.settings import Settings

from .conftest import Tenant, create_session, link_key, make_tenant

CREATED_KEYS = {
    "id",
    "object",
    "token",
    "url",
    "customer",
    "status",
    "single_use",
    "sections",
    "flow",
    "return_url",
    "locale",
    "expires_at",
    "created_at",
}


def _time(value: str) -> datetime:
    assert value.endswith("Z")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_create_json_defaults(
    client: TestClient[Any, Any], tenant: Tenant, bf_settings: Settings
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    body = await create_session(client, tenant)
    assert set(body) >= CREATED_KEYS
    assert body["id"].startswith("ps_")
    assert body["object"] == "portal_session"
    assert body["token"].startswith("bfl_")
    assert body["url"] == f"{bf_settings.portal_base_url}/r/{body['token']}"
    assert body["customer"] == tenant.customers[0].id
    assert body["status"] == "active"
    assert body["single_use"] is True
    assert body["sections"] == SECTION_DEFAULTS
    assert body["flow"] is None
    assert body["return_url"] is None
    assert body["locale"] is None
    created, expires = _time(body["created_at"]), _time(body["expires_at"])
    assert before <= created <= datetime.now(UTC)
    assert expires - created == timedelta(seconds=3600)


async def test_create_all_options_json(client: TestClient[Any, Any], tenant: Tenant) -> None:
    body = await create_session(
        client,
        tenant,
        customer=None,
        customer_external_id="ext-1",
        return_url="https://app.example.com/account?x=1",
        ttl_seconds=600,
        single_use=False,
        sections={"invoices": {"enabled": False}, "subscriptions": {"allow_cancel": False}},
        flow={"type": "subscription_cancel", "subscription": "sub_123ABC"},
        locale="fr-CA",
        send_email=True,
    )
    assert body["customer"] == tenant.customers[1].id
    assert body["return_url"] == "https://app.example.com/account?x=1"
    assert _time(body["expires_at"]) - _time(body["created_at"]) == timedelta(seconds=600)
    assert body["single_use"] is False
    assert body["sections"]["invoices"] == {"enabled": False}
    assert body["sections"]["subscriptions"] == {"enabled": True, "allow_cancel": False}
    assert body["sections"]["profile"] == {"enabled": True, "allow_edit": True}
    assert body["flow"] == {"type": "subscription_cancel", "subscription": "sub_123ABC"}
    assert body["locale"] == "fr-CA"
    assert body["send_email"] is True


async def test_create_form_encoded(client: TestClient[Any, Any], tenant: Tenant) -> None:
    resp = await client.post(
        "/v1/portal_sessions",
        data={
            "customer": tenant.customers[0].stripe_id,
            "ttl_seconds": "120",
            "single_use": "false",
            "sections[payment_methods][allow_update]": "false",
            "sections[usage][enabled]": "false",
            "flow[type]": "payment_method_update",
        },
        headers=tenant.auth,
    )
    body = await resp.json()
    assert resp.status == 201, body
    assert body["customer"] == tenant.customers[0].id  # resolved from the Stripe id
    assert body["single_use"] is False
    assert body["sections"]["payment_methods"] == {"enabled": True, "allow_update": False}
    assert body["sections"]["usage"] == {"enabled": False}
    assert body["flow"] == {"type": "payment_method_update"}
    assert _time(body["expires_at"]) - _time(body["created_at"]) == timedelta(seconds=120)


async def test_site_defaults_apply(client: TestClient[Any, Any], db_pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(
        db_pool, default_sections={"usage": {"enabled": False}, "bogus": 1}, default_ttl=900
    )
    body = await create_session(client, tenant)
    assert body["sections"]["usage"] == {"enabled": False}
    assert set(body["sections"]) == set(SECTION_DEFAULTS)
    assert _time(body["expires_at"]) - _time(body["created_at"]) == timedelta(seconds=900)
    # The request still wins over the site's defaults.
    body = await create_session(client, tenant, sections={"usage": {"enabled": True}})
    assert body["sections"]["usage"] == {"enabled": True}


async def test_row_stores_only_the_token_hash(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    body = await create_session(client, tenant)
    row = await db_pool.fetchrow("SELECT * FROM portal.portal_sessions WHERE id = $1", body["id"])
    assert row is not None
    assert row["site_id"] == tenant.site_id
    assert row["token_hash"] == tokens.hash_token(body["token"])
    assert body["token"] not in json.dumps({k: str(v) for k, v in dict(row).items()})


async def test_link_index_written_with_expiry(
    client: TestClient[Any, Any],
    tenant: Tenant,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    body = await create_session(client, tenant, ttl_seconds=300)
    key = link_key(bf_settings, body["token"])
    assert key.startswith(bf_settings.redis_prefix)  # inside this run's slice
    raw = await redis_client.get(key)
    assert raw is not None
    assert json.loads(raw) == {
        "session_id": body["id"],
        "customer_id": tenant.customers[0].id,
        "site_id": tenant.site_id,
        "expires_at": body["expires_at"],
        "single_use": True,
    }
    assert 295 <= await redis_client.ttl(key) <= 300


async def test_concurrent_creates_are_all_indexed(
    client: TestClient[Any, Any],
    tenant: Tenant,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    """Index writes of concurrent requests share pipelined round trips; none is lost."""
    bodies = await asyncio.gather(*(create_session(client, tenant) for _ in range(25)))
    keys = [link_key(bf_settings, b["token"]) for b in bodies]
    values = await redis_client.mget(keys)
    assert [json.loads(v)["session_id"] for v in values] == [b["id"] for b in bodies]
