"""/openapi.json is a valid OpenAPI 3.1 document that matches the live routes and the
responses the service really sends."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from billfold.settings import Settings
from billfold_testing import openapi as oa
from session_api.app import create_app

from .conftest import Tenant, create_session


async def _doc(client: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()  # type: ignore[no-any-return]


async def test_document_is_valid_openapi_31(client: TestClient[Any, Any]) -> None:
    doc = await _doc(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


async def test_document_paths_match_live_routes(
    client: TestClient[Any, Any], app: web.Application
) -> None:
    doc = await _doc(client)
    assert oa.documented_operations(doc) == oa.live_operations(app)


async def test_real_responses_match_schemas(client: TestClient[Any, Any], tenant: Tenant) -> None:
    doc = await _doc(client)
    created = await create_session(
        client,
        tenant,
        flow={"type": "subscription_cancel", "subscription": "sub_1"},
        return_url="https://example.com/",
        locale="en",
    )
    oa.check_schema(doc, "CreatedPortalSession", created)
    got = await (
        await client.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    ).json()
    oa.check_schema(doc, "PortalSession", got)
    listed = await (await client.get("/v1/portal_sessions", headers=tenant.auth)).json()
    oa.check_schema(doc, "PortalSessionList", listed)
    customer = await (
        await client.get(f"/v1/customers/{tenant.customers[0].id}", headers=tenant.auth)
    ).json()
    oa.check_schema(doc, "Customer", customer)
    oa.check_schema(doc, "Readiness", await (await client.get("/readyz")).json())
    oa.check_schema(doc, "Health", await (await client.get("/healthz")).json())
    # Request bodies the API accepts validate against the request schema.
    oa.check_schema(
        doc, "CreatePortalSessionRequest", {"customer": "cu_1", "sections": {"usage": {}}}
    )
    with pytest.raises(jsonschema.ValidationError):
        oa.check_schema(doc, "PortalSession", created)  # token/url never belong to a read


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
    oa.check_schema(doc, "Error", await resp.json())
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
    oa.check_schema(doc, "Error", await resp.json())
    resp = await client.get("/v1/portal_sessions")
    assert resp.status == 401
    oa.check_schema(doc, "Error", await resp.json())


# What the HTTP layer can answer to any request, whatever the operation.
EVERY_OPERATION = {"400", "404", "405", "408", "413", "500"}
V1 = {"401", "403", "503"}
CREATE = {"409", "415"}


async def test_every_operation_declares_every_status_it_can_meet(
    client: TestClient[Any, Any],
) -> None:
    """A generated client meets no undeclared status: each error status is declared,
    with the error schema, on every operation that can answer it."""
    doc = await _doc(client)
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, op in oa.operations(doc):
        expected = set(EVERY_OPERATION)
        if path.startswith("/v1/"):
            expected |= V1
        if (path, method) == ("/v1/portal_sessions", "post"):
            expected |= CREATE
        responses = op["responses"]
        assert expected <= set(responses), (path, method, expected - set(responses))
        for status in expected:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == error, (path, method, status)
    readyz = doc["paths"]["/readyz"]["get"]["responses"]
    for status in ("200", "503"):
        schema = readyz[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Readiness"}


async def test_undeclared_statuses_are_now_declared(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    """The statuses a generated client used to meet undeclared: 404 for an unknown
    route under a documented path, 405, 413; each answered with the error schema."""
    doc = await _doc(client)
    cases = [
        ("GET", "/v1/portal_sessions/a/b", {}, 404, "/v1/portal_sessions/{id}", "get"),
        ("PATCH", "/v1/portal_sessions", {}, 405, "/v1/portal_sessions", "get"),
        ("POST", "/healthz", {}, 405, "/healthz", "get"),
        (
            "POST",
            "/v1/portal_sessions",
            {"json": {"customer": "x" * 70_000}},
            413,
            "/v1/portal_sessions",
            "post",
        ),
        ("GET", "/readyz", {"data": b"x" * 70_000}, 413, "/readyz", "get"),
    ]
    for method, path, kwargs, status, doc_path, doc_method in cases:
        resp = await client.request(method, path, headers=tenant.auth, **kwargs)
        assert resp.status == status, (method, path, await resp.text())
        oa.check_schema(doc, "Error", await resp.json())
        assert str(status) in doc["paths"][doc_path][doc_method]["responses"]


def _flatten(schema: dict[str, Any], doc: dict[str, Any], prefix: str = "") -> set[str]:
    """Stripe-style form names of a JSON request schema's leaves."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        names: set[str] = set()
        for member in schema["oneOf"]:
            names |= _flatten(member, doc, prefix)
        return names
    if schema.get("type") != "object":
        return {prefix}
    names = set()
    for name, prop in schema["properties"].items():
        names |= _flatten(prop, doc, f"{prefix}[{name}]" if prefix else name)
    return names


async def test_create_bodies_json_first_and_form_flat(client: TestClient[Any, Any]) -> None:
    """Generators pick a body by its schema: JSON comes first with the nested schema,
    the form has its own flat one naming every field of the JSON one, as text."""
    doc = await _doc(client)
    content = doc["paths"]["/v1/portal_sessions"]["post"]["requestBody"]["content"]
    assert list(content) == ["application/json", "application/x-www-form-urlencoded"]
    json_schema = content["application/json"]["schema"]
    form_ref = content["application/x-www-form-urlencoded"]["schema"]
    assert form_ref != json_schema
    form = doc["components"]["schemas"][form_ref["$ref"].rsplit("/", 1)[1]]
    assert set(form["properties"]) == _flatten(json_schema, doc)
    for name, prop in form["properties"].items():
        assert prop["type"] == "string", name
    assert form["properties"]["single_use"]["enum"] == ["true", "false"]
    assert form["properties"]["sections[usage][enabled]"]["enum"] == ["true", "false"]


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"customer": "cu_1", "ttl_seconds": "120", "single_use": "false"}, True),
        ({"sections[invoices][enabled]": "true", "flow[type]": "payment_method_update"}, True),
        ({"ttl_seconds": "0060"}, True),
        ({"ttl_seconds": "604800"}, True),
        ({"ttl_seconds": "59"}, False),
        ({"ttl_seconds": "604801"}, False),
        ({"ttl_seconds": "+120"}, False),
        ({"single_use": "1"}, False),
        ({"sections": {"usage": {"enabled": "true"}}}, False),
    ],
)
async def test_form_schema_states_the_accepted_spellings(
    client: TestClient[Any, Any], tenant: Tenant, body: dict[str, str], ok: bool
) -> None:
    """The form schema accepts what the API accepts: checked against the document and
    against the live API with the same body."""
    doc = await _doc(client)
    if ok:
        oa.check_schema(doc, "CreatePortalSessionForm", body)
    else:
        with pytest.raises(jsonschema.ValidationError):
            oa.check_schema(doc, "CreatePortalSessionForm", body)
    if isinstance(body.get("sections"), dict):
        return  # not expressible as a form at all
    data = {**body, "customer": tenant.customers[0].id}
    resp = await client.post("/v1/portal_sessions", data=data, headers=tenant.auth)
    assert (resp.status == 201) is ok, await resp.text()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_degraded_readiness_matches_schema(
    aiohttp_client: Callable[..., Any], bf_settings: Settings
) -> None:
    settings = bf_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    doc = await _doc(client)
    resp = await client.get("/readyz")
    body = await resp.json()
    assert (resp.status, body["status"]) == (200, "degraded"), body
    oa.check_schema(doc, "Readiness", body)
