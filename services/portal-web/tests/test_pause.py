"""Paused plans on the Plan page, through the real billing-sync (RPC over RabbitMQ) and
the fake Stripe: Stripe's two pauses, each shown for what it means with a Resume button
that resumes it at Stripe: the ``paused`` status (a trial ended without a card) and
paused payment collection (``pause_collection``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from billfold.settings import Settings
from billfold_testing.waiting import Eventually

from .billing import Billing, portal_for
from .conftest import Client, create_link, enter, texts

DAY = 86_400


def _resume_form(html: str, sub: str) -> dict[str, str]:
    """The Resume form of subscription ``sub`` as the page gives it (CSRF token, call id)."""
    form = re.search(
        rf'<form method="post" action="/p/plan/{sub}/resume">(.*?)</form>', html, re.DOTALL
    )
    assert form, "no Resume form for the subscription"
    return dict(re.findall(r'name="(csrf|call)" value="([^"]+)"', form.group(1)))


async def _audited(pool: asyncpg.Pool, session: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT action, outcome FROM web.audit_log WHERE portal_session_id = $1", session
    )
    return [(r["action"], r["outcome"]) for r in rows]


async def test_a_paused_subscription_shows_paused_and_resume_restarts_it(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    # A trial without a card, set to pause when it ends; it ended: status `paused`.
    customer = await billing.customer(
        eventually,
        cards=(),
        subscription={
            "trial_period_days": 7,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        },
    )
    sub_id = customer.subscription
    assert sub_id is not None
    await billing.api.v1.subscriptions.update_async(sub_id, params={"trial_end": "now"})
    # The customer has a card by now (added on the Payment methods page, say).
    pm = await billing.api.v1.payment_methods.attach_async(
        "pm_card_visa", params={"customer": customer.stripe_id}
    )
    await billing.api.v1.customers.update_async(
        customer.stripe_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    await billing.settled(eventually)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, locale="en")
    await enter(portal, created)

    html = await (await portal.get("/p/plan")).text()
    shown = texts(html)
    assert "Paused since" in shown
    assert "Your trial ended without a card, so your plan is paused" in shown
    assert "Resume plan" in shown
    assert "Cancel plan" not in shown

    resp = await portal.post(
        f"/p/plan/{sub_id}/resume", data=_resume_form(html, sub_id), allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/p/plan?done=unpaused"
    sub = await billing.api.v1.subscriptions.retrieve_async(sub_id)
    assert sub.status == "active"
    # billing-sync mirrored it before replying: the next page shows it.
    shown = texts(await (await portal.get("/p/plan?done=unpaused")).text())
    assert "Your plan is active again." in shown
    assert "Active" in shown
    assert "Paused" not in shown
    assert "Resume plan" not in shown
    assert await _audited(db_pool, created["id"]) == [("subscription.resume", "ok")]


async def test_paused_payments_show_until_when_and_resume_clears_the_pause(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = customer.subscription
    assert sub_id is not None
    # The merchant pauses collection for 40 days, past the next renewal.
    resumes_at = billing.fake.now() + 40 * DAY
    await billing.api.v1.subscriptions.update_async(
        sub_id,
        params={"pause_collection": {"behavior": "mark_uncollectible", "resumes_at": resumes_at}},
    )
    await billing.settled(eventually)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, locale="de")
    await enter(portal, created)

    html = await (await portal.get("/p/plan")).text()
    shown = texts(html)
    assert "Zahlungen pausiert bis" in shown  # the badge, in the session's German
    assert "Zahlungen sind pausiert: Bis zum" in shown
    assert "Nächste Abbuchung" not in shown  # the renewal is not charged while paused
    assert "Tarif fortsetzen" in shown
    assert "Tarif kündigen" in shown  # still cancellable

    resp = await portal.post(
        f"/p/plan/{sub_id}/resume", data=_resume_form(html, sub_id), allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/p/plan?done=unpaused"
    sub = await billing.api.v1.subscriptions.retrieve_async(sub_id)
    assert sub.pause_collection is None
    assert sub.status == "active"
    shown = texts(await (await portal.get("/p/plan?done=unpaused")).text())
    assert "Ihr Tarif ist wieder aktiv." in shown
    assert "pausiert" not in shown
    assert "Nächste Abbuchung" in shown
    assert "Tarif fortsetzen" not in shown
    assert await _audited(db_pool, created["id"]) == [("subscription.resume", "ok")]


async def test_a_subscription_paused_on_demand_says_since_when_and_resumes(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    customer = await billing.customer(eventually, subscription={})
    sub_id = customer.subscription
    assert sub_id is not None
    await billing.api.v1.subscriptions.pause_async(sub_id)  # Stripe's on-demand pause
    await billing.settled(eventually)
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    created = await create_link(api, billing.tenant, locale="en")
    await enter(portal, created)

    html = await (await portal.get("/p/plan")).text()
    shown = texts(html)
    today = datetime.fromtimestamp(billing.fake.now(), UTC)
    assert f"Paused since {today:%b} {today.day}, {today.year}" in shown
    assert "Your plan is paused and nothing is charged." in shown
    assert "Next charge" not in shown
    assert "Cancel plan" not in shown
    resp = await portal.post(
        f"/p/plan/{sub_id}/resume", data=_resume_form(html, sub_id), allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/p/plan?done=unpaused"
    assert (await billing.api.v1.subscriptions.retrieve_async(sub_id)).status == "active"
    shown = texts(await (await portal.get("/p/plan?done=unpaused")).text())
    assert "Your plan is active again." in shown
    assert "Paused" not in shown
    assert "Next charge" in shown
    assert await _audited(db_pool, created["id"]) == [("subscription.resume", "ok")]
