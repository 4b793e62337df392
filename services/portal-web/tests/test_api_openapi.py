"""The portal API's OpenAPI document is valid 3.1, matches the live API routes under
both servers, and the responses the service really sends; schemathesis drives it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
import jsonschema
import pytest
from openapi_spec_validator import validate
from pydantic import ValidationError

from billfold.rpc.calls import SetCancelAtPeriodEnd
from billfold.settings import Settings
from billfold_testing import openapi as oa
from billfold_testing.waiting import Eventually
from portal_web import api_openapi, credentials
from portal_web.api_writes import SubscriptionUpdate
from portal_web.app import create_app as create_portal

from .billing import Billing
from .conftest import (
    Client,
    Tenant,
    add_card,
    add_invoice,
    add_subscription,
    add_usage,
    create_link,
    enter,
)

API = "/api/portal/v1"
DOC_URL = f"{API}/openapi.json"
EXAMPLES_PER_OPERATION_AND_MODE = 25


async def _doc(portal: Client) -> dict[str, Any]:
    resp = await portal.get(DOC_URL)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()  # type: ignore[no-any-return]


async def test_document_is_valid_openapi_31(portal: Client) -> None:
    doc = await _doc(portal)
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert doc == json.loads(json.dumps(api_openapi.document()))


async def test_document_operations_match_live_api_routes(portal: Client) -> None:
    """Each documented operation is served at top level and under a frame's prefix, and
    nothing else under the API prefixes is served."""
    doc = await _doc(portal)
    live = oa.live_operations(portal.app, credentials.is_api)
    assert oa.documented_operations(doc) == live
    assert ("GET", f"/e/{{token}}{API}/invoices") in live
    assert ("GET", f"/e/{{token}}{API}/openapi.json") not in live


async def test_write_bodies_fit_the_document_and_the_rpc_call() -> None:
    """A request body the write's schema accepts is one the RPC call accepts, and what
    the schema refuses the API refuses too."""
    doc = api_openapi.document()
    body = {
        "cancel_at_period_end": True,
        "cancellation_reason": {"feedback": "too_expensive", "comment": "pricey"},
    }
    oa.check_schema(doc, "SubscriptionUpdateRequest", body)
    SetCancelAtPeriodEnd(
        site_id="site_1",
        customer_id="cu_1",
        subscription_id="sub_1",
        cancel_at_period_end=body["cancel_at_period_end"],
        reason=body["cancellation_reason"],
    )
    with pytest.raises(jsonschema.ValidationError):
        oa.check_schema(doc, "SubscriptionUpdateRequest", {"cancellation_reason": {}})
    with pytest.raises(jsonschema.ValidationError):
        oa.check_schema(
            doc,
            "SubscriptionUpdateRequest",
            {"cancel_at_period_end": True, "cancellation_reason": {"feedback": "meh"}},
        )
    oa.check_schema(doc, "SetupSession", {"url": "https://checkout.stripe.com/c/pay/cs_1"})
    SubscriptionUpdate.model_validate(body, strict=True)
    for refused in (
        {"cancellation_reason": {}},
        {"cancel_at_period_end": True, "cancellation_reason": {"feedback": "meh"}},
        {"cancel_at_period_end": "true"},
        {"cancel_at_period_end": True, "extra": 1},
        {"cancel_at_period_end": False, "cancellation_reason": {"feedback": "other"}},
        {"cancel_at_period_end": True, "cancellation_reason": None},
    ):
        with pytest.raises(ValidationError):
            SubscriptionUpdate.model_validate(refused, strict=True)


async def _fill(db_pool: asyncpg.Pool, tenant: Tenant) -> None:
    tiers = [
        {"up_to": 5, "unit_amount": 100, "flat_amount": 900},
        {"up_to": None, "unit_amount": 50},
    ]
    await add_subscription(db_pool, tenant, items=[{"product": "Pro", "unit_amount": 4900}])
    sub = await add_subscription(
        db_pool,
        tenant,
        status="trialing",
        items=[{"product": "API", "model": "graduated", "tiers": tiers}],
        cancel_at_period_end=True,
    )
    await add_subscription(
        db_pool, tenant, status="canceled", items=[{"product": "Old"}], next_charge=None
    )
    await add_usage(db_pool, tenant, sub, meter="Calls", value="3.25")
    await add_invoice(db_pool, tenant, number="I-1", status="open", due="2020-01-01")
    await add_invoice(db_pool, tenant, number="I-2", currency="jpy", total=1200)
    await add_card(db_pool, tenant, brand="visa", last4="4242", default=True)
    await db_pool.execute(
        """UPDATE mirror.customers SET address = '{"country": "DE", "city": "Berlin"}'::jsonb,
           tax_ids = '[{"type": "eu_vat", "value": "DE1"}]'::jsonb WHERE id = $1""",
        tenant.customer_ids[0],
    )


async def test_real_responses_match_schemas(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    await _fill(db_pool, tenant)
    doc = await _doc(portal)
    multi = await create_link(api, tenant, single_use=False, locale="de")
    framed = await portal.get(
        f"/r/{multi['token']}", headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False
    )
    prefix = framed.headers["Location"].rstrip("/")
    await enter(portal, await create_link(api, tenant, return_url="https://app.example.com/"))
    bearer = {"Authorization": f"Bearer {multi['token']}"}
    schemas = {
        "/session": "PortalSession",
        "/subscriptions": "SubscriptionList",
        "/invoices": "InvoiceList",
        "/payment-methods": "PaymentMethodList",
        "/usage": "UsageList",
        "/profile": "Profile",
    }
    for path, schema in schemas.items():
        for url, headers in [
            (API + path, {}),
            (API + path, bearer),
            (prefix + API + path, {"Sec-Fetch-Dest": "empty"}),
        ]:
            resp = await portal.get(url, headers=headers)
            assert resp.status == 200, (url, await resp.text())
            body = await resp.json()
            oa.check_schema(doc, schema, body)
            assert body.get("data", [body]), url  # every list has something to check
    # Errors are the Error schema, with a status the operation declares.
    hidden = await create_link(
        api, tenant, single_use=False, sections={"usage": {"enabled": False}}
    )
    cases = [
        (f"{API}/usage", {"Authorization": f"Bearer {hidden['token']}"}, 404, "/usage"),
        (f"{API}/invoices?page=0", bearer, 400, "/invoices"),
        (f"{API}/session", {"Authorization": "Bearer bfl_unknown"}, 401, "/session"),
        (f"{API}/session", {"Authorization": "Basic eDp5"}, 401, "/session"),
    ]
    for url, headers, status, op in cases:
        resp = await portal.get(url, headers=headers)
        assert resp.status == status, await resp.text()
        oa.check_schema(doc, "Error", await resp.json())
        assert str(status) in doc["paths"][API + op]["get"]["responses"]
    resp = await portal.post(f"{API}/session", headers=bearer)
    assert resp.status == 405
    oa.check_schema(doc, "Error", await resp.json())


# What the HTTP layer can answer to any request; the API's operations add 401 and 503.
HTTP_LAYER = {"400", "404", "405", "408", "413", "500"}
EVERY_OPERATION = HTTP_LAYER | {"401", "503"}


async def test_every_operation_declares_every_status_it_can_meet(portal: Client) -> None:
    doc = await _doc(portal)
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, op in oa.operations(doc):
        expected = HTTP_LAYER if path == DOC_URL else EVERY_OPERATION
        responses = op["responses"]
        assert expected <= set(responses), (path, method, expected - set(responses))
        for status in expected:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == error, (path, method, status)


@pytest.fixture(scope="module")
def fuzz_cases() -> list[tuple[str, Any]]:
    pytest.importorskip(
        "schemathesis",
        reason="schemathesis is not installed (dev dependency 'schemathesis>=4.0')",
    )
    return oa.fuzz_cases(api_openapi.document(), API + "/", EXAMPLES_PER_OPERATION_AND_MODE)


async def test_schemathesis_cases_keep_the_promises(
    api: Client,
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
    fuzz_cases: list[tuple[str, Any]],
) -> None:
    """Positive and negative cases for every operation, with a multi-use link's token:
    no 500, errors in Stripe's shape, successes match the documented schema. The writes
    go to a real billing-sync in front of the fake Stripe (a setup session is made for
    real; a generated subscription id is none of the customer's: 404)."""
    await billing.customer(eventually, subscription={})
    tenant = billing.tenant
    portal: Client = await aiohttp_client(create_portal(bf_settings, rpc_queue=billing.queue))
    await _fill(db_pool, tenant)
    doc = api_openapi.document()
    multi = await create_link(api, tenant, single_use=False)
    failures: list[str] = []
    assert {case.path for _, case in fuzz_cases} >= {f"{API}/session", f"{API}/invoices"}
    for mode, case in fuzz_cases:
        sent = await oa.send_case(portal, case, {"Authorization": f"Bearer {multi['token']}"})
        if sent is None:
            continue
        label, status, raw, ctype = sent
        label = f"[{mode}] {label}"
        try:
            oa.check_case_response(doc, case, status, raw, ctype)
        except AssertionError as exc:
            failures.append(f"{label}\n    {exc}")
        except jsonschema.ValidationError as exc:
            failures.append(f"{label}\n    schema: {exc.message}")
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:10])
