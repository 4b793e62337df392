"""``billfold stripe webhook-register`` and ``billfold stripe demo``: the demo's data is
created in Stripe and reaches the mirror through billing-sync's real webhook endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest_asyncio
import stripe
from aiohttp.test_utils import TestServer

from billfold_testing.stripe_fake.fixtures import StripeFake
from billing_sync import accounts
from billing_sync.app import create_app
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings

from .conftest import Eventually, Synced, new_site


async def _cli(*args: str, stripe_fake: StripeFake) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLFOLD_STRIPE_API_BASE": stripe_fake.base_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from billfold.cli import main; main()",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest_asyncio.fixture
async def server(settings: BillingSyncSettings) -> AsyncIterator[TestServer]:
    """billing-sync with its worker, answering webhooks on a real port (no broker: the
    change events stay in the outbox)."""
    app = create_app(
        settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"}),
        reconcile=False,
    )
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def _slug(pool: asyncpg.Pool, site: str) -> str:
    return str(await pool.fetchval("SELECT slug FROM portal.sites WHERE id = $1", site))


async def test_register_then_demo_fills_the_mirror_through_webhooks(
    server: TestServer,
    db_pool: asyncpg.Pool,
    box: SecretBox,
    stripe_fake: StripeFake,
    stripe_api: stripe.StripeClient,
) -> None:
    site = await new_site(db_pool)
    slug = await _slug(db_pool, site)
    key = f"sk_test_{secrets.token_hex(12)}"  # the site's own account at the fake
    async with db_pool.acquire() as conn:
        await accounts.configure(conn, box, site, api_key=key)
    base = str(server.make_url("/")).rstrip("/")

    # Registering twice leaves one endpoint, whose secret (shown by Stripe only on
    # creation) is the one stored.
    for _ in range(2):
        done = await _cli(
            "stripe", "webhook-register", "--site", slug, "--url", base, stripe_fake=stripe_fake
        )
        assert done.returncode == 0, done.stderr
        assert "webhook secret: set" in done.stdout
    endpoints = (await stripe_api.v1.webhook_endpoints.list_async()).data
    assert [e.url for e in endpoints] == [f"{base}/stripe/webhooks/{site}"]
    async with db_pool.acquire() as conn:
        stored = await accounts.get(conn, box, site)
    assert stored is not None
    assert stored.webhook_secret is not None
    assert stored.webhook_secret not in done.stdout + done.stderr
    assert stored.api_key == key  # the site's key was kept

    # Nothing but webhooks feed this mirror (no reconciler, no `billfold sync`).
    done = await _cli("stripe", "demo", "--site", slug, "--wait", "90", stripe_fake=stripe_fake)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["site"] == site
    people = {c["external_id"]: c for c in printed["customers"]}
    assert len(people) == 7
    assert printed["customers"][0]["external_id"] == "demo-ada"

    rows = await db_pool.fetch(
        """
        SELECT c.external_id, s.status, s.cancel_at_period_end, s.currency,
               i.quantity, i.billing_scheme, i.product_name
        FROM mirror.customers c
        JOIN mirror.subscriptions s ON s.customer_id = c.id
        JOIN mirror.subscription_items i ON i.subscription_id = s.stripe_id
        WHERE c.site_id = $1
        """,
        site,
    )
    subs = {(r["external_id"], r["status"]): r for r in rows if r["quantity"] is not None}
    assert subs["demo-ada", "active"]["quantity"] == 5
    assert subs["demo-grace", "active"]["billing_scheme"] == "tiered"
    assert ("demo-alan", "trialing") in subs
    assert subs["demo-katherine", "active"]["cancel_at_period_end"] is True
    assert subs["demo-yukihiro", "active"]["currency"] == "jpy"
    invoices = await db_pool.fetch(
        "SELECT c.external_id, i.status, i.amount_paid FROM mirror.invoices i "
        "JOIN mirror.customers c ON c.id = i.customer_id WHERE i.site_id = $1",
        site,
    )
    edsger = sorted(r["status"] for r in invoices if r["external_id"] == "demo-edsger")
    assert edsger == ["open", "open", "void"]  # due in 30 days, declined, void
    assert any(r["status"] == "paid" and r["amount_paid"] > 0 for r in invoices)
    await _overdue_shown(db_pool, site)
    await _usage_shown(db_pool, site, people["demo-ada"])
    cards = await db_pool.fetch(
        "SELECT c.external_id, p.is_default FROM mirror.payment_methods p "
        "JOIN mirror.customers c ON c.id = p.customer_id WHERE p.site_id = $1",
        site,
    )
    assert sorted(r["is_default"] for r in cards if r["external_id"] == "demo-ada") == [
        False,
        True,
    ]

    # Again: the same customers, nothing created twice.
    before = len((await stripe_api.v1.customers.list_async(params={"limit": 100})).data)
    again = await _cli("stripe", "demo", "--site", slug, "--wait", "90", stripe_fake=stripe_fake)
    assert again.returncode == 0, again.stderr
    assert [c["stripe_id"] for c in json.loads(again.stdout)["customers"]] == [
        c["stripe_id"] for c in printed["customers"]
    ]
    after = len((await stripe_api.v1.customers.list_async(params={"limit": 100})).data)
    assert after == before


async def test_demo_without_webhooks_says_what_is_missing(
    db_pool: asyncpg.Pool, box: SecretBox, stripe_fake: StripeFake
) -> None:
    site = await new_site(db_pool)
    async with db_pool.acquire() as conn:
        await accounts.configure(conn, box, site, api_key=f"sk_test_{secrets.token_hex(12)}")
    done = await _cli("stripe", "demo", "--site", site, "--wait", "1", stripe_fake=stripe_fake)
    assert done.returncode == 1
    assert "the mirror does not show" in done.stderr
    assert "billfold sync" in done.stderr


async def test_demo_refuses_a_live_key_and_an_unconfigured_site(
    db_pool: asyncpg.Pool, box: SecretBox, stripe_fake: StripeFake
) -> None:
    bare = await new_site(db_pool)
    done = await _cli("stripe", "demo", "--site", bare, stripe_fake=stripe_fake)
    assert done.returncode == 2
    assert "no Stripe configuration" in done.stderr
    live = await new_site(db_pool)
    async with db_pool.acquire() as conn:
        await accounts.configure(conn, box, live, api_key=f"sk_live_{secrets.token_hex(12)}")
    done = await _cli("stripe", "demo", "--site", live, stripe_fake=stripe_fake)
    assert done.returncode == 2
    assert "live-mode" in done.stderr
    assert stripe_fake.event_types() == []  # nothing was written at Stripe


async def test_a_deleted_customer_gives_its_external_id_to_a_live_one(
    synced: Synced, eventually: Eventually
) -> None:
    """What a restarted fake Stripe (or a tenant re-creating a customer) leads to: the
    live customer takes the external id, so session-api finds it by that id."""
    api, pool = synced.api, synced.pool
    meta = {"external_id": "reborn", "billfold_site": synced.site_id}
    old = await api.v1.customers.create_async(params={"email": "o@example.com", "metadata": meta})
    await synced.settled(eventually)
    await api.v1.customers.delete_async(old.id)
    new = await api.v1.customers.create_async(params={"email": "n@example.com", "metadata": meta})
    await synced.settled(eventually)
    rows = {
        r["stripe_id"]: r
        for r in await pool.fetch(
            "SELECT stripe_id, external_id, deleted_at FROM mirror.customers WHERE site_id = $1",
            synced.site_id,
        )
    }
    assert rows[new.id]["external_id"] == "reborn"
    assert rows[new.id]["deleted_at"] is None
    assert rows[old.id]["external_id"] is None
    assert rows[old.id]["deleted_at"] is not None


async def _overdue_shown(pool: asyncpg.Pool, site: str) -> None:
    """Barbara (on a test clock started 40 days back) has an open invoice whose due date
    has passed, and portal-web's invoice page (read-only here) badges it Overdue."""
    from portal_web import i18n
    from portal_web import mirror as portal_mirror
    from portal_web.presenters import invoice_badge

    i18n.activate(i18n.negotiate("en", None, None))  # the words checked below

    customer = await pool.fetchval(
        "SELECT id FROM mirror.customers WHERE site_id = $1 AND external_id = 'demo-barbara'",
        site,
    )
    now = datetime.now(UTC)
    page = await portal_mirror.invoices(pool, site, customer, page=1, per_page=10)
    overdue = [i for i in page.invoices if i.status == "open" and i.due_date and i.due_date < now]
    assert len(overdue) == 1, page.invoices
    assert (now - overdue[0].due_date).days >= 20  # due 14 days after a start 40 days back
    try:
        badge = invoice_badge(overdue[0], now)
    finally:
        i18n.reset()
    assert badge.text.startswith("Overdue by"), badge


async def _usage_shown(pool: asyncpg.Pool, site: str, printed: dict[str, object]) -> None:
    """Ada (the customer `make run` opens the portal for) has a metered price on a billing
    meter, and the usage reported this period is mirrored: the meter's total equals what
    the demo sent, spread over the days of the period so far."""
    reported = printed["usage"]
    assert isinstance(reported, dict)
    assert len(reported) == 1, reported
    [(meter_id, sent)] = reported.items()
    [row] = await pool.fetch(
        "SELECT u.meter_id, u.meter_name, u.value, u.daily, u.period_start, u.period_end "
        "FROM mirror.usage u JOIN mirror.customers c ON c.id = u.customer_id "
        "WHERE c.site_id = $1 AND c.external_id = 'demo-ada'",
        site,
    )
    assert row["meter_id"] == meter_id
    assert row["meter_name"] == "API calls"
    assert row["value"] == Decimal(sent) > 0
    # 12 days into the period: a bar for each day so far, most of them with calls.
    assert (datetime.now(UTC) - row["period_start"]).days == 12
    days = row["daily"]
    assert 12 <= len(days) <= 14, days
    assert sum(Decimal(d["value"]) for d in days) == row["value"]
    assert sum(1 for d in days if Decimal(d["value"]) > 0) >= 12
