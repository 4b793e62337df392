"""/openapi.json is a valid OpenAPI 3.1 document that matches the live routes and the
responses the service really sends."""

from __future__ import annotations

import uuid
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from .conftest import Tenant, create_session

METHODS = {"get", "post", "put", "patch", "delete"}


async def _doc(client: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()  # type: ignore[no-any-return]


def _check(doc: dict[str, Any], schema_name: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


async def test_document_is_valid_openapi_31(client: TestClient[Any, Any]) -> None:
    doc = await _doc(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


async def test_document_paths_match_live_routes(
    client: TestClient[Any, Any], app: web.Application
) -> None:
    doc = await _doc(client)
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    live = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == live


async def test_real_responses_match_schemas(client: TestClient[Any, Any], tenant: Tenant) -> None:
    doc = await _doc(client)
    created = await create_session(
        client,
        tenant,
        flow={"type": "subscription_cancel", "subscription": "sub_1"},
        return_url="https://example.com/",
        locale="en",
    )
    _check(doc, "CreatedPortalSession", created)
    got = await (
        await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    ).json()
    _check(doc, "PortalSession", got)
    listed = await (await client.get("/v1/portal_sessions", headers=tenant.auth)).json()
    _check(doc, "PortalSessionList", listed)
    customer = await (
        await client.get(f"/v1/customers/{tenant.customers[0].id}", headers=tenant.auth)
    ).json()
    _check(doc, "Customer", customer)
    _check(doc, "Health", await (await client.get("/readyz")).json())
    _check(doc, "Health", await (await client.get("/healthz")).json())
    # Request bodies the API accepts validate against the request schema.
    _check(doc, "CreatePortalSessionRequest", {"customer": "cu_1", "sections": {"usage": {}}})
    with pytest.raises(jsonschema.ValidationError):
        _check(doc, "PortalSession", created)  # token/url never belong to a read


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/portal_sessions", {"json": {"sections": {"x": {}}}}),
        ("POST", "/v1/portal_sessions", {"data": b"x", "headers": {"Content-Type": "text/csv"}}),
        ("GET", "/v1/portal_sessions/ps_missing", {}),
        ("GET", "/v1/portal_sessions", {"params": {"limit": "1000"}}),
        ("DELETE", "/v1/nowhere", {}),
    ],
)
async def test_error_responses_match_schema(
    client: TestClient[Any, Any], tenant: Tenant, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    doc = await _doc(client)
    headers = {**tenant.auth, **kwargs.pop("headers", {})}
    resp = await client.request(method, path, headers=headers, **kwargs)
    assert 400 <= resp.status < 500
    _check(doc, "Error", await resp.json())
    op = doc["paths"].get(path, doc["paths"].get("/v1/portal_sessions/{id}", {}))
    if path in doc["paths"] or path.startswith("/v1/portal_sessions/"):
        assert str(resp.status) in op[method.lower()]["responses"]


async def test_conflict_and_auth_errors_match_schema(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    doc = await _doc(client)
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    await client.post(
        "/v1/portal_sessions",
        json={"customer": tenant.customers[0].id},
        headers={**tenant.auth, **idem},
    )
    resp = await client.post(
        "/v1/portal_sessions",
        json={"customer": tenant.customers[1].id},
        headers={**tenant.auth, **idem},
    )
    assert resp.status == 409
    _check(doc, "Error", await resp.json())
    resp = await client.get("/v1/portal_sessions")
    assert resp.status == 401
    _check(doc, "Error", await resp.json())
