"""The customer's actions over HTTP, through the real billing-sync (RPC over RabbitMQ) and
the fake Stripe: the audit row and the ``portal.action`` event; CSRF, 403 and 404 by
direct POST; billing-sync stopped: reads work and an action says "try again" within the
RPC deadline."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from yarl import URL

from billfold.bus import Bus
from billfold.events import PortalAction, parse_event
from billfold.rpc import SetCancelAtPeriodEnd
from billfold.settings import Settings
from billfold_testing.waiting import Eventually
from portal_web import call_ids

from .billing import RPC_TIMEOUT, Billing, portal_for
from .conftest import Client, create_link, enter, texts


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def _csrf_of(portal: Client, path: str) -> str:
    resp = await portal.get(path)
    assert resp.status == 200, path
    return _csrf(await resp.text())


async def test_cancel_writes_audit_and_event_and_changes_stripe(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    assert customer.subscription is not None
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    await enter(portal, created)

    bus = await Bus.connect(bf_settings, name="portal-web-test-actions")
    connection = await aio_pika.connect(bf_settings.amqp_url)
    channel = await connection.channel()
    name = f"test.portal-web.{uuid.uuid4().hex}"
    queue = await bus.declare_queue(name, ["portal.action"], channel=channel)
    try:
        page = await portal.get(f"/p/plan/{customer.subscription}/cancel")
        assert page.status == 200
        assert "Your plan stays active until" in texts(await page.text())
        csrf = _csrf(await page.text())
        resp = await portal.post(
            f"/p/plan/{customer.subscription}/cancel",
            data={"csrf": csrf, "feedback": "too_expensive", "comment": "Too dear"},
            headers={"User-Agent": "Mozilla/5.0 (actions test)"},
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/p/plan?done=cancelled"
        # Stripe has it (the fake), and so has the mirror (billing-sync wrote it before
        # replying): the next page shows it.
        sub = await billing.api.v1.subscriptions.retrieve_async(customer.subscription)
        assert sub.cancel_at_period_end is True
        assert sub.cancellation_details is not None
        assert sub.cancellation_details.feedback == "too_expensive"
        shown = texts(await (await portal.get("/p/plan?done=cancelled")).text())
        assert "Your plan is cancelled" in shown
        assert "Resume plan" in shown

        row = await db_pool.fetchrow(
            "SELECT * FROM web.audit_log WHERE portal_session_id = $1", created["id"]
        )
        assert row is not None
        assert row["action"] == "subscription.cancel"
        assert row["object_id"] == customer.subscription
        assert row["outcome"] == "ok"
        assert row["customer_id"] == customer.id
        assert row["ip"] == "127.0.0.1"
        assert row["user_agent"] == "Mozilla/5.0 (actions test)"
        assert row["browser_session_id"].startswith("bs_")

        async def next_event() -> PortalAction:
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    event = parse_event(message.body)
                    if isinstance(event, PortalAction) and event.data.audit_id == row["id"]:
                        return event
            raise AssertionError("queue closed")

        event = await asyncio.wait_for(next_event(), 15)
        assert event.site_id == billing.tenant.site_id
        assert event.data.action == "subscription.cancel"
        assert event.data.target == customer.subscription
        assert event.data.session_id == created["id"]
        assert event.data.outcome == "ok"

        # Resume: undo it.
        csrf = await _csrf_of(portal, "/p/plan")
        resp = await portal.post(
            f"/p/plan/{customer.subscription}/resume", data={"csrf": csrf}, allow_redirects=False
        )
        assert resp.headers["Location"] == "/p/plan?done=resumed"
        sub = await billing.api.v1.subscriptions.retrieve_async(customer.subscription)
        assert sub.cancel_at_period_end is False
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.queue_delete(f"{name}.dlq")
        await connection.close()
        await bus.close()


async def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    await enter(portal, created)
    for data in ({}, {"csrf": "0" * 40}):
        resp = await portal.post(
            f"/p/plan/{customer.subscription}/cancel", data=data, allow_redirects=False
        )
        assert resp.status == 403
        assert "Not allowed" in texts(await resp.text())
    # A cross-site POST is refused even with the right token.
    csrf = await _csrf_of(portal, "/p/plan")
    resp = await portal.post(
        f"/p/plan/{customer.subscription}/cancel",
        data={"csrf": csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
        allow_redirects=False,
    )
    assert resp.status == 403
    sub = await billing.api.v1.subscriptions.retrieve_async(str(customer.subscription))
    assert sub.cancel_at_period_end is False
    count = await db_pool.fetchval(
        "SELECT count(*) FROM web.audit_log WHERE portal_session_id = $1", created["id"]
    )
    assert count == 0


async def test_disallowed_action_is_403_and_hidden_section_404_by_direct_post(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(
        eventually, cards=("pm_card_visa", "pm_card_mastercard"), subscription={}
    )
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(
        api,
        billing.tenant,
        sections={
            "subscriptions": {"allow_cancel": False},
            "payment_methods": {"enabled": False},
            "profile": {"allow_edit": False},
        },
    )
    await enter(portal, created)
    plan = await (await portal.get("/p/plan")).text()
    assert "Cancel plan" not in texts(plan)  # not offered…
    csrf = _csrf(plan)
    # …and refused when posted anyway.
    for path, status in (
        (f"/p/plan/{customer.subscription}/cancel", 403),
        (f"/p/plan/{customer.subscription}/resume", 403),
        ("/p/profile/edit", 403),
        (f"/p/payment-methods/{customer.cards[1]}/default", 404),
        (f"/p/payment-methods/{customer.cards[1]}/remove", 404),
        ("/p/payment-methods/update", 404),
    ):
        resp = await portal.post(path, data={"csrf": csrf, "name": "X"}, allow_redirects=False)
        assert resp.status == status, path
    assert (await portal.get(f"/p/plan/{customer.subscription}/cancel")).status == 403
    assert (await portal.get("/p/profile/edit")).status == 403
    assert (await portal.get("/p/payment-methods/update")).status == 404
    stripe_customer = await billing.api.v1.customers.retrieve_async(customer.stripe_id)
    assert stripe_customer.invoice_settings is not None
    assert stripe_customer.invoice_settings.default_payment_method == customer.cards[0]


async def test_billing_sync_stopped_reads_work_and_actions_say_try_again(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    await enter(portal, created)
    csrf = await _csrf_of(portal, "/p/plan")
    await billing.server.close()  # billing-sync is gone; its queue stays, unserved

    for path in ("/p/plan", "/p/invoices", "/p/payment-methods", "/p/profile"):
        resp = await portal.get(path)
        assert resp.status == 200, path
    began = time.monotonic()
    resp = await portal.post(
        f"/p/plan/{customer.subscription}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    took = time.monotonic() - began
    assert resp.status == 303
    assert resp.headers["Location"] == "/p/plan?failed=unavailable"
    assert took < RPC_TIMEOUT + 1.0, took
    shown = await portal.get(resp.headers["Location"])
    assert shown.status == 200
    assert "We could not complete this right now. Please try again" in texts(await shown.text())
    row = await db_pool.fetchrow(
        "SELECT outcome, error_code FROM web.audit_log WHERE portal_session_id = $1",
        created["id"],
    )
    assert row is not None
    assert (row["outcome"], row["error_code"]) == ("unavailable", "unavailable")


async def test_subscription_cancel_flow_lands_on_confirm_and_offers_the_way_back(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    back = "https://app.example.com/billing"
    created = await create_link(
        api,
        billing.tenant,
        return_url=back,
        flow={"type": "subscription_cancel", "subscription": customer.subscription},
    )
    home = await enter(portal, created)
    resp = await portal.get(home, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"/p/plan/{customer.subscription}/cancel"
    page = await portal.get(resp.headers["Location"])
    csrf = _csrf(await page.text())
    resp = await portal.post(
        f"/p/plan/{customer.subscription}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    assert resp.headers["Location"] == "/p/plan?done=cancelled&flow=done"
    done = await (await portal.get(resp.headers["Location"])).text()
    assert f'class="button" href="{back}"' in done
    assert f"Back to {billing.tenant.name}" in texts(done)


async def test_payment_method_update_flow_returns_with_the_new_default(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    await billing.customer(eventually, subscription={})
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    back = "https://app.example.com/billing"
    created = await create_link(
        api, billing.tenant, return_url=back, flow={"type": "payment_method_update"}
    )
    home = await enter(portal, created)
    resp = await portal.get(home, allow_redirects=False)
    assert resp.headers["Location"] == "/p/payment-methods/update"
    csrf = await _csrf_of(portal, "/p/payment-methods/update")
    handover = await portal.post("/p/payment-methods/update", data={"csrf": csrf})
    assert handover.status == 200
    found = re.search(r'href="([^"]+/checkout/cs_[^"]+)"', await handover.text())
    assert found, "no link to the hosted page"
    # The customer fills in Stripe's page (the fake's form), which sends them back.
    async with aiohttp.ClientSession() as browser:
        done = await browser.post(
            found.group(1),
            data={"cardnumber": "5555 5555 5555 4444", "expiry": "12 / 34", "cvc": "123"},
            allow_redirects=False,
        )
        assert done.status == 303
        success = done.headers["Location"]
    assert "/p/payment-methods?updated=1&was=pm_" in success
    path = URL(success).path_qs  # the portal's own base URL, as configured

    async def caught_up() -> bool:
        page = texts(await (await portal.get(path)).text())
        return "Card added. It is now your default card." in page

    await eventually(caught_up, timeout=30)
    page = await (await portal.get(path)).text()
    assert f'class="button" href="{back}"' in page
    assert "Mastercard •••• 4444" in texts(page).split("Default")[0]


async def test_framed_flow_posts_with_its_path_token(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    """The frame has no cookie: its POSTs are authenticated by the path token. The CSRF
    field is still required (one code path), and a forged POST would need the token."""
    customer = await billing.customer(eventually, subscription={})
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    frame = {"Sec-Fetch-Dest": "iframe"}
    resp = await portal.post(f"/r/{created['token']}", headers=frame, allow_redirects=False)
    prefix = resp.headers["Location"].rstrip("/")
    assert prefix.startswith("/e/bfs_")
    portal.session.cookie_jar.clear()
    page = await portal.get(f"{prefix}/plan", headers=frame)
    csrf = _csrf(await page.text())
    path = f"{prefix}/plan/{customer.subscription}/cancel"
    refused = await portal.post(path, headers=frame, allow_redirects=False)
    assert refused.status == 403
    resp = await portal.post(path, data={"csrf": csrf}, headers=frame, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"{prefix}/plan?done=cancelled"


async def test_make_default_remove_and_auto_pay(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(
        eventually, cards=("pm_card_visa", "pm_card_mastercard"), subscription={}
    )
    visa, mastercard = customer.cards
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    await enter(portal, created)
    csrf = await _csrf_of(portal, "/p/payment-methods")

    async def post(path: str) -> str:
        resp = await portal.post(path, data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303, path
        return resp.headers["Location"]

    # The default card cannot be removed: billing-sync says so, in the customer's words.
    failed = await post(f"/p/payment-methods/{visa}/remove")
    assert failed == "/p/payment-methods?failed=default_payment_method"
    shown = texts(await (await portal.get(failed)).text())
    assert "The default card cannot be removed" in shown

    assert await post(f"/p/payment-methods/{mastercard}/default") == (
        "/p/payment-methods?done=default_set"
    )
    first = texts(await (await portal.get("/p/payment-methods")).text()).split("Default")[0]
    assert "Mastercard •••• 4444" in first
    assert await post(f"/p/payment-methods/{visa}/remove") == "/p/payment-methods?done=removed"
    assert "Visa •••• 4242" not in texts(await (await portal.get("/p/payment-methods")).text())

    resp = await portal.post(
        f"/p/payment-methods/auto-pay/{customer.subscription}",
        data={"csrf": csrf, "auto_pay": "off"},
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/p/payment-methods?done=auto_pay_off"
    sub = await billing.api.v1.subscriptions.retrieve_async(str(customer.subscription))
    assert sub.collection_method == "send_invoice"
    page = await (await portal.get(resp.headers["Location"])).text()
    assert 'role="switch" aria-checked="false"' in page
    # Another customer's card is not this customer's to touch: not found.
    other = await portal.post(
        "/p/payment-methods/pm_someone_elses/default", data={"csrf": csrf}, allow_redirects=False
    )
    assert other.headers["Location"] == "/p/payment-methods?failed=resource_missing"


def _call_values(html: str) -> list[str]:
    return re.findall(r'name="call" value="(call_[0-9a-f]{32})"', html)


async def test_a_form_submitted_twice_makes_one_stripe_write(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    assert customer.subscription is not None
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant)
    await enter(portal, created)
    path = f"/p/plan/{customer.subscription}/cancel"
    page = await (await portal.get(path)).text()
    (call,) = _call_values(page)
    (other,) = _call_values(await (await portal.get(path)).text())
    assert other != call  # every render its own id

    before = billing.idempotency_keys()
    form = {"csrf": _csrf(page), "call": call, "feedback": "unused"}
    # The same rendered form, sent twice (a double click, the browser resending it).
    for _ in range(2):
        resp = await portal.post(path, data=form, allow_redirects=False)
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/p/plan?done=cancelled"

    rows = await db_pool.fetch(
        "SELECT call_id, outcome FROM web.audit_log WHERE portal_session_id = $1",
        created["id"],
    )
    # Both attempts are audited, with the one call id they shared.
    assert [r["outcome"] for r in rows] == ["ok", "ok"]
    sent = {r["call_id"] for r in rows}
    assert len(sent) == 1
    (call_id,) = sent
    assert call_id != call  # derived by the server, never the browser's value itself
    writes = [k for k in billing.idempotency_keys() - before if k.startswith(call_id)]
    assert len(writes) == 1, writes  # one Stripe write: the second answered by billing-sync
    sub = await billing.api.v1.subscriptions.retrieve_async(customer.subscription)
    assert sub.cancel_at_period_end is True

    # A form without the field (rendered before it existed) still works: a fresh id.
    resume = await _csrf_of(portal, "/p/plan")
    resp = await portal.post(
        f"/p/plan/{customer.subscription}/resume",
        data={"csrf": resume, "call": "not-a-call-id"},
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/p/plan?done=resumed"


def test_call_ids_are_scoped_to_the_session_and_the_call() -> None:
    cancel = SetCancelAtPeriodEnd(
        site_id="site_1", customer_id="cu_1", subscription_id="sub_1", cancel_at_period_end=True
    )
    value = "call_" + "a" * 32
    mine = call_ids.from_form("bs_mine", value, cancel)
    assert mine.call_id == call_ids.from_form("bs_mine", value, cancel).call_id
    assert mine.call_id != call_ids.from_form("bs_theirs", value, cancel).call_id
    # The same value on another call (or with other content) is another call id.
    resume = cancel.model_copy(update={"cancel_at_period_end": False})
    assert mine.call_id != call_ids.from_form("bs_mine", value, resume).call_id
    # Malformed or missing: the call keeps its own fresh id.
    for bad in (None, "", "call_XYZ", "call_" + "a" * 33, value + "\n", 5):
        assert call_ids.from_form("bs_mine", bad, cancel).call_id == cancel.call_id
