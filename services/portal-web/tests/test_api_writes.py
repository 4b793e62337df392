"""The JSON API's writes (PATCH a subscription's cancel_at_period_end, POST a setup
session) through the real billing-sync (RPC over RabbitMQ) and the fake Stripe: each
credential, the CSRF header for a cookie, the session's sections and permissions, a
strict body, another customer's object, billing-sync stopped, and the audit row."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
from yarl import URL

from billfold.settings import Settings
from billfold_testing.waiting import Eventually

from .billing import RPC_TIMEOUT, Billing, portal_for
from .conftest import Client, Tenant, add_subscription, create_link, enter

API = "/api/portal/v1"


def bearer(created: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {created['token']}"}


async def call(
    portal: Client, method: str, path: str, status: int, **kwargs: Any
) -> dict[str, Any]:
    resp = await portal.request(method, path, **kwargs)
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert resp.headers["Content-Type"].startswith("application/json")
    return body


async def listed(portal: Client, sub_id: str, **kwargs: Any) -> dict[str, Any]:
    body = await call(portal, "GET", f"{API}/subscriptions", 200, **kwargs)
    return next(s for s in body["data"] if s["id"] == sub_id)


async def audit(db_pool: asyncpg.Pool, session_id: str) -> list[asyncpg.Record]:
    return await db_pool.fetch(
        "SELECT action, object_id, outcome, error_code, browser_session_id, user_agent "
        "FROM web.audit_log WHERE portal_session_id = $1 ORDER BY created_at",
        session_id,
    )


async def test_bearer_cancels_with_a_reason_then_uncancels(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = str(customer.subscription)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, single_use=False)
    auth = {**bearer(created), "User-Agent": "tenant-ui/1.0"}
    path = f"{API}/subscriptions/{sub_id}"

    body = await call(
        portal,
        "PATCH",
        path,
        200,
        json={
            "cancel_at_period_end": True,
            "cancellation_reason": {"feedback": "too_expensive", "comment": "Too dear"},
        },
        headers=auth,
    )
    assert body["cancel_at_period_end"] is True
    assert body["ends_at"] is not None
    # Exactly what the read lists, from the mirror billing-sync wrote before replying.
    assert body == await listed(portal, sub_id, headers=auth)
    sub = await billing.api.v1.subscriptions.retrieve_async(sub_id)
    assert sub.cancel_at_period_end is True
    assert sub.cancellation_details is not None
    assert sub.cancellation_details.feedback == "too_expensive"
    assert sub.cancellation_details.comment == "Too dear"

    body = await call(
        portal, "PATCH", path, 200, json={"cancel_at_period_end": False}, headers=auth
    )
    assert body["cancel_at_period_end"] is False
    assert body["ends_at"] is None
    assert body == await listed(portal, sub_id, headers=auth)
    sub = await billing.api.v1.subscriptions.retrieve_async(sub_id)
    assert sub.cancel_at_period_end is False

    rows = await audit(db_pool, created["id"])
    assert [(r["action"], r["object_id"], r["outcome"]) for r in rows] == [
        ("subscription.cancel", sub_id, "ok"),
        ("subscription.uncancel", sub_id, "ok"),
    ]
    assert rows[0]["user_agent"] == "tenant-ui/1.0"
    assert rows[0]["browser_session_id"] is not None


async def test_cookie_writes_need_the_csrf_header_and_the_frame_needs_none(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = str(customer.subscription)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    await enter(portal, created)
    path = f"{API}/subscriptions/{sub_id}"
    cancel = {"cancel_at_period_end": True}

    refused = await call(portal, "PATCH", path, 403, json=cancel)
    assert refused["error"]["code"] == "csrf_invalid"
    refused = await call(
        portal, "PATCH", path, 403, json=cancel, headers={"X-CSRF-Token": "0" * 40}
    )
    assert refused["error"]["code"] == "csrf_invalid"
    refused = await call(portal, "POST", f"{API}/payment-methods/setup-session", 403)
    assert refused["error"]["code"] == "csrf_invalid"
    csrf = (await call(portal, "GET", f"{API}/session", 200))["csrf_token"]
    # A cross-site request is refused even with the right token.
    cross = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    await call(portal, "PATCH", path, 403, json=cancel, headers=cross)
    assert await audit(db_pool, created["id"]) == []  # refused before the action layer
    sub = await billing.api.v1.subscriptions.retrieve_async(sub_id)
    assert sub.cancel_at_period_end is False

    body = await call(portal, "PATCH", path, 200, json=cancel, headers={"X-CSRF-Token": csrf})
    assert body["cancel_at_period_end"] is True
    body = await call(
        portal,
        "PATCH",
        path,
        200,
        json={"cancel_at_period_end": False},
        headers={"X-CSRF-Token": csrf},
    )
    assert body["cancel_at_period_end"] is False
    assert (await billing.api.v1.subscriptions.retrieve_async(sub_id)).cancel_at_period_end is False

    # A cookie client's card page returns into the portal's own page.
    made = await call(
        portal,
        "POST",
        f"{API}/payment-methods/setup-session",
        200,
        headers={"X-CSRF-Token": csrf},
    )
    session = await _checkout(billing, made["url"])
    assert URL(str(session.success_url)).path_qs.startswith(
        f"/p/payment-methods?updated=1&was={customer.cards[0]}"
    )

    # Framed: the path's token is the credential; no cookie, no CSRF header.
    frame = {"Sec-Fetch-Dest": "iframe"}
    framed = await create_link(api, billing.tenant)
    resp = await portal.post(f"/r/{framed['token']}", headers=frame, allow_redirects=False)
    prefix = resp.headers["Location"].rstrip("/")
    assert prefix.startswith("/e/bfs_")
    portal.session.cookie_jar.clear()
    body = await call(portal, "PATCH", prefix + path, 200, json=cancel)
    assert body["cancel_at_period_end"] is True
    made = await call(portal, "POST", f"{prefix}{API}/payment-methods/setup-session", 200)
    session = await _checkout(billing, made["url"])
    assert URL(str(session.success_url)).path_qs == "/hosted-return?what=card_added"


async def _checkout(billing: Billing, url: str) -> Any:
    """The fake Stripe's Checkout session behind ``url``."""
    found = re.search(r"/checkout/(cs_[A-Za-z0-9_]+)", url)
    assert found, url
    return await billing.api.v1.checkout.sessions.retrieve_async(found.group(1))


async def test_setup_session_is_a_hosted_checkout_page_returning_to_the_tenant(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    await billing.customer(eventually, subscription={})
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    back = "https://app.example.com/billing"
    created = await create_link(api, billing.tenant, single_use=False, return_url=back, locale="de")
    made = await call(
        portal, "POST", f"{API}/payment-methods/setup-session", 200, headers=bearer(created)
    )
    assert set(made) == {"url"}
    assert made["url"].startswith(billing.fake.base_url)
    session = await _checkout(billing, made["url"])
    assert session.mode == "setup"
    assert (session.success_url, session.cancel_url) == (back, back)
    async with aiohttp.ClientSession() as browser:  # the fake's hosted card form is there
        page = await browser.get(made["url"])
        assert page.status == 200
    # An empty JSON object is no parameters too; anything else is refused.
    await call(
        portal,
        "POST",
        f"{API}/payment-methods/setup-session",
        200,
        json={},
        headers=bearer(created),
    )
    err = await call(
        portal,
        "POST",
        f"{API}/payment-methods/setup-session",
        400,
        json={"success_url": "https://evil.example/"},
        headers=bearer(created),
    )
    assert (err["error"]["code"], err["error"]["param"]) == ("parameter_unknown", "success_url")

    # Without a return URL, a Bearer client's customer lands on a page needing no session.
    plain = await create_link(api, billing.tenant, single_use=False)
    made = await call(
        portal, "POST", f"{API}/payment-methods/setup-session", 200, headers=bearer(plain)
    )
    session = await _checkout(billing, made["url"])
    assert URL(str(session.success_url)).path_qs == "/hosted-return?what=card_added"
    assert URL(str(session.cancel_url)).path_qs == "/hosted-return?what=card_cancelled"
    rows = await audit(db_pool, created["id"])
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("payment_method.update", "ok"),
        ("payment_method.update", "ok"),
    ]


async def test_hidden_section_is_404_and_disallowed_action_403(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = str(customer.subscription)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    path = f"{API}/subscriptions/{sub_id}"
    setup = f"{API}/payment-methods/setup-session"
    cancel = {"cancel_at_period_end": True}

    hidden = await create_link(
        api,
        billing.tenant,
        single_use=False,
        sections={"subscriptions": {"enabled": False}, "payment_methods": {"enabled": False}},
    )
    for method, url in (("PATCH", path), ("POST", setup)):
        err = await call(portal, method, url, 404, json=cancel, headers=bearer(hidden))
        assert err["error"]["code"] == "route_not_found", url

    denied = await create_link(
        api,
        billing.tenant,
        single_use=False,
        sections={
            "subscriptions": {"allow_cancel": False},
            "payment_methods": {"allow_update": False},
        },
    )
    for method, url in (("PATCH", path), ("POST", setup)):
        err = await call(portal, method, url, 403, json=cancel, headers=bearer(denied))
        assert err["error"]["code"] == "action_not_allowed", url
        assert err["error"]["type"] == "permission_error"
    assert (await billing.api.v1.subscriptions.retrieve_async(sub_id)).cancel_at_period_end is False
    assert await audit(db_pool, hidden["id"]) == []
    assert await audit(db_pool, denied["id"]) == []


async def test_another_customers_subscription_is_not_found(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    first = await billing.customer(eventually, subscription={})
    await billing.customer(eventually, subscription={})  # the link's customer now
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, single_use=False)
    for sub_id in (str(first.subscription), "sub_nobody", "x" * 300):
        err = await call(
            portal,
            "PATCH",
            f"{API}/subscriptions/{sub_id}",
            404,
            json={"cancel_at_period_end": True},
            headers=bearer(created),
        )
        assert (err["error"]["code"], err["error"]["param"]) == ("resource_missing", "id")
    sub = await billing.api.v1.subscriptions.retrieve_async(str(first.subscription))
    assert sub.cancel_at_period_end is False


async def test_bad_bodies_are_400_naming_the_parameter(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    """Checked before anything is looked up or asked of billing-sync (this portal has no
    billing-sync at all: any of these reaching it would be a 503)."""
    sub_id = await add_subscription(db_pool, tenant, items=[{"product": "Pro"}])
    created = await create_link(api, tenant, single_use=False)
    path = f"{API}/subscriptions/{sub_id}"
    json_type = {**bearer(created), "Content-Type": "application/json"}
    cases: list[tuple[bytes, str, str | None]] = [
        (b'{"cancel_at_period_end": true, "at_once": true}', "parameter_unknown", "at_once"),
        (b'{"cancel_at_period_end": "true"}', "parameter_invalid", "cancel_at_period_end"),
        (b'{"cancel_at_period_end": 1}', "parameter_invalid", "cancel_at_period_end"),
        (
            b'{"cancel_at_period_end": true, "cancel_at_period_end": false}',
            "parameter_invalid",
            "cancel_at_period_end",
        ),
        (
            b'{"cancel_at_period_end": true, "cancellation_reason": '
            b'{"feedback": "other", "feedback": "unused"}}',
            "parameter_invalid",
            "cancellation_reason[feedback]",
        ),
        (
            b'{"cancel_at_period_end": true, "cancellation_reason": {"feedback": "meh"}}',
            "parameter_invalid",
            "cancellation_reason[feedback]",
        ),
        (
            b'{"cancel_at_period_end": true, "cancellation_reason": {"note": "x"}}',
            "parameter_unknown",
            "cancellation_reason[note]",
        ),
        (
            b'{"cancel_at_period_end": false, "cancellation_reason": {"feedback": "other"}}',
            "parameter_invalid",
            "cancellation_reason",
        ),
        (
            b'{"cancel_at_period_end": true, "cancellation_reason": null}',
            "parameter_invalid",
            "cancellation_reason",
        ),
        (b"{}", "parameter_missing", "cancel_at_period_end"),
        (b"", "parameter_missing", "cancel_at_period_end"),
        (b"[true]", "body_invalid_json", None),
        (b'{"cancel_at_period_end": tru', "body_invalid_json", None),
        (b'{"cancel_at_period_end": true, "x\\u0000": 1}', "parameter_unknown", None),
    ]
    for raw, code, param in cases:
        err = await call(portal, "PATCH", path, 400, data=raw, headers=json_type)
        assert (err["error"]["code"], err["error"]["param"]) == (code, param), raw
        assert err["error"]["type"] == "invalid_request_error"
    err = await call(
        portal,
        "PATCH",
        path,
        415,
        data=b"cancel_at_period_end=true",
        headers={**bearer(created), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert err["error"]["code"] == "unsupported_media_type"
    assert await audit(db_pool, created["id"]) == []


async def test_billing_sync_stopped_is_503_within_the_deadline_and_audited(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = str(customer.subscription)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, single_use=False)
    await billing.server.close()  # billing-sync is gone; its queue stays, unserved

    assert (await listed(portal, sub_id, headers=bearer(created)))["id"] == sub_id  # reads work
    for method, path, body in (
        ("PATCH", f"{API}/subscriptions/{sub_id}", {"cancel_at_period_end": True}),
        ("POST", f"{API}/payment-methods/setup-session", None),
    ):
        began = time.monotonic()
        resp = await portal.request(method, path, json=body, headers=bearer(created))
        took = time.monotonic() - began
        err = await resp.json()
        assert resp.status == 503, err
        assert resp.headers["Retry-After"] == "5"
        assert err["error"]["type"] == "api_error"
        assert err["error"]["code"] == "unavailable"
        assert err["error"]["message"].startswith("We could not complete this right now.")
        assert took < RPC_TIMEOUT + 1.0, took
    rows = await audit(db_pool, created["id"])
    assert [(r["action"], r["outcome"], r["error_code"]) for r in rows] == [
        ("subscription.cancel", "unavailable", "unavailable"),
        ("payment_method.update", "unavailable", "unavailable"),
    ]


async def test_writes_answer_a_cors_preflight(portal: Client) -> None:
    for path in (f"{API}/subscriptions/sub_1", f"{API}/payment-methods/setup-session"):
        resp = await portal.options(
            path,
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert resp.status == 204, path
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert {"POST", "PATCH"} <= set(resp.headers["Access-Control-Allow-Methods"].split(", "))
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]


async def test_idempotency_key_makes_a_retried_write_run_once(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = str(customer.subscription)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, single_use=False)
    path = f"{API}/subscriptions/{sub_id}"

    # Malformed: refused before any call, naming the header.
    body = await call(
        portal,
        "PATCH",
        path,
        400,
        json={"cancel_at_period_end": True},
        headers={**bearer(created), "Idempotency-Key": "short"},
    )
    assert body["error"]["param"] == "Idempotency-Key"

    before = billing.idempotency_keys()
    retried = {**bearer(created), "Idempotency-Key": "retry-7f3c2a9e-1"}
    for _ in range(2):
        body = await call(
            portal, "PATCH", path, 200, json={"cancel_at_period_end": True}, headers=retried
        )
        assert body["cancel_at_period_end"] is True
    ids = await db_pool.fetch(
        "SELECT DISTINCT call_id FROM web.audit_log WHERE portal_session_id = $1", created["id"]
    )
    assert len(ids) == 1
    writes = [k for k in billing.idempotency_keys() - before if k.startswith(ids[0]["call_id"])]
    assert len(writes) == 1, writes
