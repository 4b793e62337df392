"""The JSON API (/api/portal/v1): every section's read, the pages' enforcement, and its
three credentials (cookie, framed path, a multi-use link's token as Bearer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from billfold import tokens
from billfold.settings import Settings
from portal_web import api_routes, branding, credentials
from portal_web.app import create_app as create_portal
from portal_web.browser_sessions import Refusal, Refused, link_cache_key
from portal_web.state import SITES, VALIDATOR

from .conftest import (
    Client,
    Tenant,
    add_card,
    add_invoice,
    add_subscription,
    add_usage,
    create_link,
    enter,
    make_tenant,
    texts,
)

API = "/api/portal/v1"
TIERS = [
    {"up_to": 10, "unit_amount": 500, "flat_amount": None},
    {"up_to": None, "unit_amount": 400, "flat_amount": None},
]


def bearer(created: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {created['token']}"}


async def get_json(portal: Client, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
    resp = await portal.get(path, **kwargs)
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert resp.headers["Content-Type"].startswith("application/json")
    if status == 200:
        assert resp.headers["Cache-Control"] == "no-store"
    return body


def cookie_token(portal: Client) -> str:
    return next(c.value for c in portal.session.cookie_jar if c.key == "bf_session")


async def test_session_says_what_is_allowed_branding_language_and_way_back(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool, primary_color="#ffdd00")
    created = await create_link(
        api,
        tenant,
        locale="de",
        return_url="https://app.example.com/account",
        sections={"usage": {"enabled": False}, "subscriptions": {"allow_cancel": False}},
    )
    await enter(portal, created)
    body = await get_json(portal, f"{API}/session")
    assert body["object"] == "portal_session"
    assert body["id"] == created["id"]
    assert body["customer"] == tenant.customer_ids[0]
    assert body["expires_at"] == created["expires_at"]
    assert body["locale"] == "de"
    assert body["return_url"] == "https://app.example.com/account"
    assert body["authentication"] == "cookie"
    assert body["csrf_token"] == credentials.csrf_token(cookie_token(portal))
    assert body["sections"]["usage"] == {"enabled": False}
    assert body["sections"]["subscriptions"] == {"enabled": True, "allow_cancel": False}
    assert body["actions"] == [
        "payment_method.update",
        "payment_method.set_default",
        "payment_method.remove",
        "profile.edit",
    ]
    site = await portal.app[SITES].get(db_pool, tenant.site_id)
    assert site is not None
    assert body["site"]["name"] == tenant.name
    assert body["site"]["support_email"] == "help@example.com"
    assert body["site"]["stylesheet"] == f"/brand/{site.id}/{branding.version(site)}.css"
    # A yellow that fails on white is darkened for the light scheme, as on the pages.
    assert body["site"]["colors"] == branding.colors(site)
    assert body["site"]["colors"]["light"]["brand"] != "#ffdd00"


async def test_subscriptions_give_facts_and_the_pages_words(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    flat = await add_subscription(db_pool, tenant, items=[{"product": "Pro", "unit_amount": 4900}])
    seats = await add_subscription(
        db_pool,
        tenant,
        items=[{"product": "Team", "model": "per_unit", "unit_amount": 1200, "quantity": 5}],
        cancel_at_period_end=True,
    )
    tiered = await add_subscription(
        db_pool,
        tenant,
        status="past_due",
        items=[{"product": "API", "model": "graduated", "tiers": TIERS, "interval": "year"}],
    )
    await enter(portal, await create_link(api, tenant, locale="en"))
    body = await get_json(portal, f"{API}/subscriptions")
    assert body["object"] == "list"
    assert body["has_more"] is False
    subs = {s["id"]: s for s in body["data"]}
    assert set(subs) == {flat, seats, tiered}

    pro = subs[flat]
    assert (pro["object"], pro["status"], pro["currency"]) == ("subscription", "active", "usd")
    assert pro["next_charge"] == {"at": "2027-03-01T00:00:00Z", "amount": 4900, "currency": "usd"}
    assert pro["current_period_start"] == "2027-02-01T00:00:00Z"
    assert pro["ends_at"] is None
    assert pro["items"][0]["unit_amount"] == 4900
    assert pro["items"][0]["price_model"] == "flat"
    assert pro["display"]["status"] == {"text": "Active", "tone": "ok"}
    assert pro["display"]["lines"][0]["price"] == "$49.00 / month"
    assert pro["display"]["next_charge"] == "$49.00 on March 1, 2027"

    team = subs[seats]
    assert team["cancel_at_period_end"] is True
    assert team["ends_at"] == "2027-03-01T00:00:00Z"
    assert team["next_charge"] is None  # it ends instead
    assert team["items"][0]["quantity"] == 5
    assert team["display"]["lines"][0]["price"] == "5 seats × $12.00 / month"  # noqa: RUF001
    assert team["display"]["ends"] == "Your plan stays active until March 1, 2027, then it ends."

    api_plan = subs[tiered]
    assert api_plan["status"] == "past_due"
    assert api_plan["items"][0]["unit_amount"] is None
    assert api_plan["items"][0]["tiers"] == [
        {"up_to": 10, "unit_amount_decimal": "500", "flat_amount_decimal": None},
        {"up_to": None, "unit_amount_decimal": "400", "flat_amount_decimal": None},
    ]
    assert api_plan["display"]["lines"][0]["tiers"] == [
        {"range": "1 to 10", "price": "$5.00 per unit"},
        {"range": "11 and above", "price": "$4.00 per unit"},
    ]
    # The words are the page's own (one presenter for both).
    page = texts(await (await portal.get("/p/plan")).text())
    for sub in subs.values():
        assert sub["display"]["status"]["text"] in page
        assert sub["display"]["lines"][0]["price"] in page


async def test_invoices_are_paged_with_states_in_the_sessions_language(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    overdue = await add_invoice(
        db_pool, tenant, number="A-OVERDUE", status="open", created="2027-01-03", due="2020-01-01"
    )
    await add_invoice(db_pool, tenant, number="A-VOID", status="void", created="2027-01-02")
    yen = await add_invoice(
        db_pool, tenant, number="A-JPY", total=1200, currency="jpy", created="2027-01-04"
    )
    for i in range(25):
        await add_invoice(db_pool, tenant, number=f"B-{i:02d}", created=f"2026-06-{i + 1:02d}")
    await add_invoice(db_pool, tenant, number="DRAFT", status="draft", created="2027-01-05")
    other = await make_tenant(db_pool)
    await add_invoice(db_pool, other, number="OTHER-SITE", created="2027-01-06")
    created = await create_link(api, tenant, locale="de", single_use=False)

    first = await get_json(portal, f"{API}/invoices", headers=bearer(created))
    assert (first["page"], first["pages"], first["per_page"], first["total_count"]) == (
        1,
        3,
        12,
        28,
    )
    assert first["has_more"] is True
    assert [i["number"] for i in first["data"][:3]] == ["A-JPY", "A-OVERDUE", "A-VOID"]
    by_id = {i["id"]: i for i in first["data"]}
    late = by_id[overdue]
    assert (late["status"], late["stripe_status"]) == ("overdue", "open")
    assert late["days_overdue"] >= 365
    assert late["due_date"] == "2020-01-01T00:00:00Z"
    assert late["display"]["status"]["text"].endswith("Tagen überfällig")
    assert late["hosted_invoice_url"] == f"https://invoice.stripe.com/i/{overdue}"
    assert (by_id[yen]["total"], by_id[yen]["currency"]) == (1200, "jpy")
    assert by_id[yen]["display"]["amount"] == "1.200\xa0¥"
    assert by_id[yen]["status"] == "paid"

    last = await get_json(portal, f"{API}/invoices?page=3", headers=bearer(created))
    assert (len(last["data"]), last["has_more"]) == (4, False)
    beyond = await get_json(portal, f"{API}/invoices?page=4", headers=bearer(created))
    assert beyond["data"] == []
    everything = await get_json(portal, f"{API}/invoices?limit=100", headers=bearer(created))
    numbers = [i["number"] for i in everything["data"]]
    assert len(numbers) == 28
    assert "DRAFT" not in numbers
    assert "OTHER-SITE" not in numbers

    for query, param in [
        ("page=0", "page"),
        ("page=x", "page"),
        ("page=1&page=2", "page"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=%EF%BC%91", "limit"),  # a full-width digit
    ]:
        error = await get_json(portal, f"{API}/invoices?{query}", 400, headers=bearer(created))
        assert error["error"]["code"] == "parameter_invalid"
        assert error["error"]["param"] == param


async def test_payment_methods_usage_and_profile(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool, customer_name="<b>Ada</b>")
    await add_card(db_pool, tenant, brand="mastercard", last4="4444")
    await add_card(db_pool, tenant, brand="visa", last4="4242", default=True)
    await add_card(db_pool, tenant, brand="amex", last4="0005", detached=True)
    other = await make_tenant(db_pool)
    await add_card(db_pool, other, brand="visa", last4="9999")
    sub = await add_subscription(db_pool, tenant, items=[{"product": "API", "unit_amount": 1}])
    await add_usage(db_pool, tenant, sub, meter="API calls", value="12345.5")
    await db_pool.execute(
        """
        UPDATE mirror.customers SET phone = '+1 555 0100',
            address = '{"line1": "1 Main St", "postal_code": "94105", "city": "San Francisco",
                        "state": "CA", "country": "US"}'::jsonb,
            tax_ids = '[{"type": "us_ein", "value": "12-3456789"}]'::jsonb
        WHERE id = $1
        """,
        tenant.customer_ids[0],
    )
    await enter(portal, await create_link(api, tenant, locale="en"))

    methods = (await get_json(portal, f"{API}/payment-methods"))["data"]
    assert [m["card"]["last4"] for m in methods] == ["4242", "4444"]
    visa = methods[0]
    assert (visa["object"], visa["type"], visa["is_default"]) == ("payment_method", "card", True)
    assert visa["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2027}
    assert visa["display"] == {"label": "Visa •••• 4242", "expires": "Expires 12/2027"}

    usage = (await get_json(portal, f"{API}/usage"))["data"]
    assert usage == [
        {
            "object": "usage",
            "meter": "API calls",
            "value": "12345.5",
            "period_start": "2027-02-01T00:00:00Z",
            "period_end": "2027-03-01T00:00:00Z",
            "daily": [],
            "display": {
                "meter": "API calls",
                "value": "12,345.5",
                "period": "Feb 1, 2027 to Mar 1, 2027",
            },
        }
    ]

    profile = await get_json(portal, f"{API}/profile")
    assert profile["name"] == "<b>Ada</b>"  # JSON carries the value; escaping is the UI's job
    assert profile["email"] == "ada@example.com"
    assert profile["phone"] == "+1 555 0100"
    assert profile["address"] == {
        "line1": "1 Main St",
        "line2": None,
        "city": "San Francisco",
        "postal_code": "94105",
        "state": "CA",
        "country": "US",
    }
    assert profile["tax_ids"] == [{"type": "us_ein", "value": "12-3456789"}]
    assert profile["display"]["address"][-1] == "United States"
    assert profile["display"]["tax_ids"] == [{"type": "US EIN", "value": "12-3456789"}]


SECTIONS = [
    ("subscriptions", "/subscriptions"),
    ("invoices", "/invoices"),
    ("payment_methods", "/payment-methods"),
    ("usage", "/usage"),
    ("profile", "/profile"),
]


def _scrubbed(body: dict[str, Any], path: str) -> dict[str, Any]:
    error = dict(body["error"])
    error.pop("request_id")
    error["message"] = error["message"].replace(path, "<path>")
    return error


@pytest.mark.parametrize(("section", "path"), SECTIONS)
async def test_hidden_section_is_an_unknown_url_for_every_credential(
    api: Client, portal: Client, tenant: Tenant, section: str, path: str
) -> None:
    hidden = {section: {"enabled": False}}
    multi = await create_link(api, tenant, sections=hidden, single_use=False)
    framed = await portal.get(
        f"/r/{multi['token']}", headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False
    )
    frame_prefix = framed.headers["Location"].rstrip("/")
    await enter(portal, await create_link(api, tenant, sections=hidden))
    unknown = await get_json(portal, f"{API}/nowhere", 404)
    for url, headers in [
        (f"{API}{path}", {}),  # cookie
        (f"{API}{path}", bearer(multi)),
        (f"{frame_prefix}{API}{path}", {"Sec-Fetch-Dest": "empty"}),
    ]:
        body = await get_json(portal, url, 404, headers=headers)
        assert _scrubbed(body, url) == _scrubbed(unknown, f"{API}/nowhere")
    session = await get_json(portal, f"{API}/session")
    assert session["sections"][section]["enabled"] is False
    # Every other section still answers.
    for other, other_path in SECTIONS:
        if other != section and other != "profile":
            await get_json(portal, f"{API}{other_path}")


async def test_multi_use_link_token_is_a_bearer(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    await add_subscription(db_pool, tenant, items=[{"product": "Pro", "unit_amount": 4900}])
    created = await create_link(api, tenant, single_use=False, locale="en")
    body = await get_json(portal, f"{API}/session", headers=bearer(created))
    assert (body["authentication"], body["csrf_token"]) == ("link", None)
    assert body["id"] == created["id"]
    subs = await get_json(portal, f"{API}/subscriptions", headers=bearer(created))
    assert [s["items"][0]["product"] for s in subs["data"]] == ["Pro"]
    assert not list(portal.session.cookie_jar)  # no browser session was made
    # The link still works as a link afterwards.
    await enter(portal, created)


@pytest.mark.parametrize("used", [False, True])
async def test_single_use_link_token_is_not_a_bearer(
    api: Client, portal: Client, tenant: Tenant, used: bool
) -> None:
    created = await create_link(api, tenant)
    if used:
        await enter(portal, created)
        portal.session.cookie_jar.clear()
    resp = await portal.get(f"{API}/session", headers=bearer(created))
    body = await resp.json()
    assert resp.status == 401
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "link_single_use"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_revoke_refuses_the_next_bearer_request(
    api: Client, portal: Client, tenant: Tenant
) -> None:
    created = await create_link(api, tenant, single_use=False)
    await enter(portal, created)  # a browser session from the same link, by cookie
    for _ in range(2):  # the second from the cache
        await get_json(portal, f"{API}/session", headers=bearer(created))
    await get_json(portal, f"{API}/session")
    resp = await api.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    assert resp.status == 204
    started = time.monotonic()
    body = await get_json(portal, f"{API}/session", 401, headers=bearer(created))
    elapsed = time.monotonic() - started
    assert body["error"]["code"] == "session_revoked"
    assert elapsed < 0.1
    body = await get_json(portal, f"{API}/invoices", 401)  # the cookie's session too
    assert body["error"]["code"] == "session_revoked"


async def test_expired_bearer_is_refused(
    api: Client,
    portal: Client,
    tenant: Tenant,
    db_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    created = await create_link(api, tenant, single_use=False, ttl_seconds=60)
    await get_json(portal, f"{API}/session", headers=bearer(created))  # cached now
    validator = portal.app[VALIDATOR]
    later = validator_time(created["expires_at"])
    refused = await validator.validate_link(created["token"], later)  # from the cache
    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.EXPIRED
    await db_pool.execute(
        "UPDATE portal.portal_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 second' WHERE id = $1",
        created["id"],
    )
    await redis_client.delete(link_cache_key(bf_settings, tokens.hash_token(created["token"])))
    body = await get_json(portal, f"{API}/session", 401, headers=bearer(created))
    assert body["error"]["code"] == "session_expired"


def validator_time(expires_at: str) -> Any:
    from datetime import datetime, timedelta

    return datetime.fromisoformat(expires_at.replace("Z", "+00:00")) + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "authentication_required"),
        ({"Authorization": "Bearer bfl_nope"}, "session_invalid"),
        ({"Authorization": "Basic eDp5"}, "authorization_invalid"),
        ({"Authorization": "Bearer "}, "authorization_invalid"),
    ],
)
async def test_no_or_bad_credential_is_401(
    portal: Client, headers: dict[str, str], code: str
) -> None:
    body = await get_json(portal, f"{API}/subscriptions", 401, headers=headers)
    assert body["error"]["code"] == code


async def test_cookieless_client_uses_the_framed_path(
    aiohttp_client: Callable[..., Any],
    api: Client,
    bf_settings: Settings,
    tenant: Tenant,
    db_pool: asyncpg.Pool,
) -> None:
    """An HTTP client that never stores a cookie: the framed flow gives it a path that
    carries the session, and the API under it."""
    await add_invoice(db_pool, tenant, number="F-1")
    client: Client = await aiohttp_client(
        create_portal(bf_settings), cookie_jar=aiohttp.DummyCookieJar()
    )
    created = await create_link(api, tenant)
    resp = await client.post(
        f"/r/{created['token']}", headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False
    )
    assert resp.status == 303
    prefix = resp.headers["Location"].rstrip("/")
    assert prefix.startswith("/e/bfs_")
    fetch = {"Sec-Fetch-Dest": "empty"}
    body = await get_json(client, f"{prefix}{API}/session", headers=fetch)
    assert (body["authentication"], body["csrf_token"]) == ("frame", None)
    invoices = await get_json(client, f"{prefix}{API}/invoices", headers=fetch)
    assert [i["number"] for i in invoices["data"]] == ["F-1"]
    # Not at top level without a cookie, not as a page address, not as a Bearer.
    await get_json(client, f"{API}/session", 401)
    await get_json(client, f"{prefix}{API}/session", 401, headers={"Sec-Fetch-Dest": "document"})
    frame_token = prefix.removeprefix("/e/")
    body = await get_json(
        client, f"{API}/session", 401, headers={"Authorization": f"Bearer {frame_token}"}
    )
    assert body["error"]["code"] == "session_invalid"


async def _probe(request: web.Request) -> web.StreamResponse:
    principal = await api_routes.authenticate(request)
    api_routes.require_write(request, principal)
    return web.Response(status=204)


async def test_cookie_authenticated_writes_need_the_csrf_header(
    aiohttp_client: Callable[..., Any], api: Client, bf_settings: Settings, tenant: Tenant
) -> None:
    """The write operations (added on the action layer) call require_write: a probe route
    shows what it demands of each credential."""
    app = create_portal(bf_settings)
    app.router.add_patch(f"{API}/_probe", _probe)
    app.router.add_patch(f"{api_routes.FRAMED}{API}/_probe", _probe)
    portal: Client = await aiohttp_client(app)
    await enter(portal, await create_link(api, tenant))
    csrf = (await get_json(portal, f"{API}/session"))["csrf_token"]
    same = {"Sec-Fetch-Site": "same-origin"}
    for headers, status in [
        (same, 403),
        ({**same, "X-CSRF-Token": "0" * 40}, 403),
        ({"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf}, 403),
        ({"Origin": "https://evil.example", "X-CSRF-Token": csrf}, 403),
        ({**same, "X-CSRF-Token": csrf}, 204),
    ]:
        resp = await portal.patch(f"{API}/_probe", headers=headers)
        assert resp.status == status, (headers, await resp.text())
        if status == 403:
            assert (await resp.json())["error"]["code"] == "csrf_invalid"
    # Credentials a browser never sends by itself need no CSRF token.
    multi = await create_link(api, tenant, single_use=False)
    portal.session.cookie_jar.clear()
    cross = {"Sec-Fetch-Site": "cross-site"}
    resp = await portal.patch(f"{API}/_probe", headers={**bearer(multi), **cross})
    assert resp.status == 204
    framed = await portal.get(
        f"/r/{multi['token']}", headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False
    )
    prefix = framed.headers["Location"].rstrip("/")
    resp = await portal.patch(f"{prefix}{API}/_probe", headers={"Sec-Fetch-Dest": "empty"})
    assert resp.status == 204


async def test_cross_origin_bearer_reads_only_from_the_sites_origins(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=["https://app.example.com"])
    created = await create_link(api, tenant, single_use=False)
    ours = {"Origin": "https://app.example.com"}
    resp = await portal.options(
        f"{API}/invoices",
        headers={
            **ours,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in resp.headers
    resp = await portal.get(f"{API}/invoices", headers={**ours, **bearer(created)})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    resp = await portal.get(
        f"{API}/invoices", headers={"Origin": "https://evil.example", **bearer(created)}
    )
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    # A cookie-authenticated answer is never shared cross-origin.
    await enter(portal, await create_link(api, tenant))
    resp = await portal.get(f"{API}/invoices", headers=ours)
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
