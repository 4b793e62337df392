"""Every bad input to POST /v1/portal_sessions is a 4xx in Stripe's error shape."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from .conftest import Tenant, assert_error

CU = "<customer>"


def _fill(params: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    return {k: (tenant.customers[0].id if v == CU else v) for k, v in params.items()}


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({}, "parameter_missing", "customer"),
        (
            {"customer": CU, "customer_external_id": "ext-0"},
            "parameter_invalid",
            "customer_external_id",
        ),
        ({"customer": "cu_doesnotexist"}, "resource_missing", "customer"),
        ({"customer_external_id": "nobody"}, "resource_missing", "customer_external_id"),
        ({"customer": 42}, "parameter_invalid", "customer"),
        ({"customer": ""}, "parameter_invalid", "customer"),
        ({"customer": CU, "ttl_seconds": 59}, "parameter_invalid", "ttl_seconds"),
        ({"customer": CU, "ttl_seconds": 604801}, "parameter_invalid", "ttl_seconds"),
        ({"customer": CU, "ttl_seconds": "soon"}, "parameter_invalid", "ttl_seconds"),
        ({"customer": CU, "return_url": "javascript:alert(1)"}, "parameter_invalid", "return_url"),
        ({"customer": CU, "return_url": "ftp://example.com/x"}, "parameter_invalid", "return_url"),
        ({"customer": CU, "return_url": "/relative"}, "parameter_invalid", "return_url"),
        (
            {"customer": CU, "sections": {"billing": {"enabled": True}}},
            "parameter_unknown",
            "sections[billing]",
        ),
        (
            {"customer": CU, "sections": {"invoices": {"allow_cancel": True}}},
            "parameter_unknown",
            "sections[invoices][allow_cancel]",
        ),
        (
            {"customer": CU, "sections": {"invoices": {"enabled": "maybe"}}},
            "parameter_invalid",
            "sections[invoices][enabled]",
        ),
        ({"customer": CU, "sections": "all"}, "parameter_invalid", "sections"),
        ({"customer": CU, "flow": {"type": "teleport"}}, "parameter_invalid", "flow[type]"),
        ({"customer": CU, "flow": {}}, "parameter_missing", "flow[type]"),
        (
            {"customer": CU, "flow": {"type": "subscription_cancel"}},
            "parameter_missing",
            "flow[subscription]",
        ),
        (
            {"customer": CU, "flow": {"type": "subscription_cancel", "subscription": "in_1"}},
            "parameter_invalid",
            "flow[subscription]",
        ),
        (
            {"customer": CU, "flow": {"type": "payment_method_update", "x": 1}},
            "parameter_unknown",
            "flow[x]",
        ),
        ({"customer": CU, "locale": "not a locale"}, "parameter_invalid", "locale"),
        ({"customer": CU, "single_use": "perhaps"}, "parameter_invalid", "single_use"),
        ({"customer": CU, "colour": "red"}, "parameter_unknown", "colour"),
        ({"customer": "cu_\u0000x"}, "parameter_invalid", "customer"),
        ({"customer": "cu_\ud800"}, "parameter_invalid", "customer"),
    ],
)
async def test_bad_parameters(
    client: TestClient[Any, Any],
    tenant: Tenant,
    params: dict[str, Any],
    code: str,
    param: str,
) -> None:
    resp = await client.post("/v1/portal_sessions", json=_fill(params, tenant), headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 400, code, param)
    assert resp.headers["Content-Type"].startswith("application/json")


async def test_another_sites_customer_is_unknown(
    client: TestClient[Any, Any], tenant: Tenant, other_tenant: Tenant
) -> None:
    resp = await client.post(
        "/v1/portal_sessions",
        json={"customer": other_tenant.customers[0].id},
        headers=tenant.auth,
    )
    assert_error(resp.status, await resp.json(), 400, "resource_missing", "customer")


async def test_deleted_customer_is_unknown(
    client: TestClient[Any, Any], tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    gone = tenant.customers[1]
    await db_pool.execute("UPDATE mirror.customers SET deleted_at = now() WHERE id = $1", gone.id)
    resp = await client.post("/v1/portal_sessions", json={"customer": gone.id}, headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 400, "resource_missing", "customer")


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"customer": ', "application/json", 400, "body_invalid_json"),
        (b"[1, 2]", "application/json", 400, "body_invalid_json"),
        (b"\xff\xfe", "application/json", 400, "body_invalid_json"),
        (b"customer=a&customer=b", "application/x-www-form-urlencoded", 400, "parameter_invalid"),
        (
            b"sections=x&sections[usage][enabled]=true",
            "application/x-www-form-urlencoded",
            400,
            "parameter_invalid",
        ),
        (b"flow[]=x", "application/x-www-form-urlencoded", 400, "parameter_invalid"),
        (b"\xff=1", "application/x-www-form-urlencoded", 400, "body_invalid_form"),
        (b"[" * 60000, "application/json", 400, "body_invalid_json"),
        (b'{"a":' * 500 + b"1" + b"}" * 500, "application/json", 400, "parameter_invalid"),
        (b"<xml/>", "application/xml", 415, "unsupported_media_type"),
        (b"customer=x", "text/plain", 415, "unsupported_media_type"),
        (b"customer=x", "", 415, "unsupported_media_type"),
    ],
)
async def test_bad_bodies(
    client: TestClient[Any, Any],
    tenant: Tenant,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    headers = {**tenant.auth, "Content-Type": content_type}
    resp = await client.post("/v1/portal_sessions", data=data, headers=headers)
    assert_error(resp.status, await resp.json(), status, code)


async def test_empty_body_means_missing_customer(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    resp = await client.post("/v1/portal_sessions", headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 400, "parameter_missing", "customer")


async def test_body_over_64k_declared(client: TestClient[Any, Any], tenant: Tenant) -> None:
    big = b'{"customer": "' + b"x" * 70_000 + b'"}'
    resp = await client.post(
        "/v1/portal_sessions",
        data=big,
        headers={**tenant.auth, "Content-Type": "application/json"},
    )
    assert_error(resp.status, await resp.json(), 413, "body_too_large")


async def test_body_over_64k_chunked(client: TestClient[Any, Any], tenant: Tenant) -> None:
    async def chunks() -> Any:
        yield b'{"customer": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    resp = await client.post(
        "/v1/portal_sessions",
        data=chunks(),
        headers={**tenant.auth, "Content-Type": "application/json"},
    )
    assert_error(resp.status, await resp.json(), 413, "body_too_large")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing", 404, "route_not_found"),
        ("POST", "/v2/portal_sessions", 404, "route_not_found"),
        ("PUT", "/v1/portal_sessions", 405, "method_not_allowed"),
        ("PATCH", "/v1/portal_sessions/ps_123", 405, "method_not_allowed"),
        ("POST", "/v1/customers/cu_1", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods(
    client: TestClient[Any, Any], tenant: Tenant, method: str, path: str, status: int, code: str
) -> None:
    resp = await client.request(method, path, headers=tenant.auth)
    assert_error(resp.status, await resp.json(), status, code)
