"""Parameters mean one thing whoever reads them: a key given twice is refused in JSON as
in forms and queries, JSON values are strictly typed, and a form or query string spells
booleans and integers only the documented way (``true``/``false``, decimal digits)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .conftest import Tenant, assert_error

P = "/v1/portal_sessions"
CU = "<customer>"


async def _post(
    client: TestClient[Any, Any],
    tenant: Tenant,
    body: str,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    data = body.replace(CU, tenant.customers[0].id).encode()
    resp = await client.post(
        P,
        data=data,
        headers={**tenant.auth, "Content-Type": content_type, **(headers or {})},
    )
    return resp.status, await resp.json()


# --------------------------------------------------------------------------------------
# Repeated JSON keys.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param('{"customer": "x", "customer": "<customer>"}', "customer", id="top"),
        pytest.param(
            '{"customer": "<customer>", "single_use": true, "single_use": false}',
            "single_use",
            id="top-bool",
        ),
        pytest.param(
            '{"customer": "<customer>", "sections": {"usage": {}, "usage": {"enabled": false}}}',
            "sections[usage]",
            id="depth-2",
        ),
        pytest.param(
            '{"customer": "<customer>", "sections": '
            '{"invoices": {"enabled": true, "enabled": false}}}',
            "sections[invoices][enabled]",
            id="depth-3",
        ),
        pytest.param(
            '{"customer": "<customer>", "flow": {"type": "subscription_cancel", '
            '"subscription": "sub_1", "subscription": "sub_2"}}',
            "flow[subscription]",
            id="flow",
        ),
        pytest.param(
            '{"customer": "<customer>", "cust\\u006fmer": "<customer>"}',
            "customer",
            id="same-key-escaped",
        ),
        pytest.param(
            '{"customer": "<customer>", "sections": {"a": {"b": {"c": 1, "c": 2}}}}',
            "sections[a][b][c]",
            id="unknown-deep",
        ),
    ],
)
async def test_repeated_json_keys_are_refused(
    client: TestClient[Any, Any], tenant: Tenant, body: str, param: str
) -> None:
    status, got = await _post(client, tenant, body, "application/json")
    assert_error(status, got, 400, "parameter_invalid", param)
    assert "more than once" in got["error"]["message"]


async def test_repeated_json_key_is_refused_with_an_idempotency_key(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    body = '{"customer": "<customer>", "ttl_seconds": 600, "ttl_seconds": 700}'
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    status, got = await _post(client, tenant, body, "application/json", headers)
    assert_error(status, got, 400, "parameter_invalid", "ttl_seconds")


async def test_repeated_unstorable_json_key_is_refused_without_echoing_it(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    body = '{"customer": "<customer>", "sections": {"\\ud800": 1, "\\ud800": 2}}'
    status, got = await _post(client, tenant, body, "application/json")
    assert_error(status, got, 400, "parameter_invalid", "sections")


async def test_same_name_in_different_objects_is_fine(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    body = json.dumps(
        {
            "customer": CU,
            "sections": {"invoices": {"enabled": False}, "usage": {"enabled": False}},
        }
    )
    status, got = await _post(client, tenant, body, "application/json")
    assert status == 201, got
    assert got["sections"]["invoices"]["enabled"] is False


# --------------------------------------------------------------------------------------
# Strict JSON types.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"single_use": "no"}, "single_use"),
        ({"single_use": "false"}, "single_use"),
        ({"single_use": 0}, "single_use"),
        ({"send_email": 1}, "send_email"),
        ({"ttl_seconds": "120"}, "ttl_seconds"),
        ({"ttl_seconds": 120.0}, "ttl_seconds"),
        ({"ttl_seconds": True}, "ttl_seconds"),
        ({"sections": {"usage": {"enabled": "false"}}}, "sections[usage][enabled]"),
        ({"sections": {"profile": {"allow_edit": 1}}}, "sections[profile][allow_edit]"),
        ({"customer_external_id": 7}, "customer_external_id"),
        ({"locale": ["en"]}, "locale"),
    ],
)
async def test_json_values_are_strictly_typed(
    client: TestClient[Any, Any], tenant: Tenant, extra: dict[str, Any], param: str
) -> None:
    body = json.dumps({"customer": CU, **extra})
    status, got = await _post(client, tenant, body, "application/json")
    assert_error(status, got, 400, "parameter_invalid", param)


async def test_json_booleans_and_integers_are_accepted(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    body = json.dumps(
        {
            "customer": CU,
            "single_use": False,
            "send_email": False,
            "ttl_seconds": 120,
            "sections": {"usage": {"enabled": False}},
        }
    )
    status, got = await _post(client, tenant, body, "application/json")
    assert status == 201, got
    assert (got["single_use"], got["sections"]["usage"]["enabled"]) == (False, False)


# --------------------------------------------------------------------------------------
# Form bodies and query strings: the documented spellings only.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pair", "param"),
    [
        ("single_use=no", "single_use"),
        ("single_use=1", "single_use"),
        ("single_use=True", "single_use"),
        ("single_use=on", "single_use"),
        ("single_use=", "single_use"),
        ("send_email=yes", "send_email"),
        ("sections[usage][enabled]=0", "sections[usage][enabled]"),
        ("sections[usage][enabled]=FALSE", "sections[usage][enabled]"),
        ("ttl_seconds=+120", "ttl_seconds"),
        ("ttl_seconds=120.0", "ttl_seconds"),
        ("ttl_seconds=%20120", "ttl_seconds"),
        ("ttl_seconds=1_200", "ttl_seconds"),
        ("ttl_seconds=" + "9" * 19, "ttl_seconds"),
        ("ttl_seconds=%D9%A1%D9%A2%D9%A0", "ttl_seconds"),  # Arabic-Indic digits
    ],
)
async def test_form_values_only_in_documented_spellings(
    client: TestClient[Any, Any], tenant: Tenant, pair: str, param: str
) -> None:
    status, got = await _post(
        client, tenant, f"customer={CU}&{pair}", "application/x-www-form-urlencoded"
    )
    assert_error(status, got, 400, "parameter_invalid", param)


async def test_form_documented_spellings_are_accepted(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    body = (
        f"customer={CU}&single_use=false&send_email=false&ttl_seconds=0120"
        "&sections[usage][enabled]=false&sections[invoices][enabled]=true"
    )
    status, got = await _post(client, tenant, body, "application/x-www-form-urlencoded")
    assert status == 201, got
    assert got["single_use"] is False
    assert got["sections"]["usage"]["enabled"] is False
    assert got["sections"]["invoices"]["enabled"] is True


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("include_expired=1", "include_expired"),
        ("include_expired=yes", "include_expired"),
        ("include_expired=True", "include_expired"),
        ("limit=%2B5", "limit"),
        ("limit=%205", "limit"),
    ],
)
async def test_query_values_only_in_documented_spellings(
    client: TestClient[Any, Any], tenant: Tenant, query: str, param: str
) -> None:
    resp = await client.get(f"{P}?{query}", headers=tenant.auth)
    assert_error(resp.status, await resp.json(), 400, "parameter_invalid", param)


async def test_query_documented_spellings_are_accepted(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    resp = await client.get(f"{P}?include_expired=false&limit=05", headers=tenant.auth)
    assert resp.status == 200, await resp.text()
