"""Backfill (``billfold sync``) and periodic reconciliation repair what webhooks missed."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys

import asyncpg
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake
from billing_sync import accounts
from billing_sync.reconcile import Reconciler
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway

from .compare import mismatches
from .conftest import Eventually, Synced, new_site

CUSTOMERS = 150  # two pages of customers; with a card, a subscription and an invoice each


async def _customer_with_plan(api: stripe.StripeClient, n: int, price: str) -> None:
    customer = await api.v1.customers.create_async(
        params={"email": f"b{n}@example.com", "name": f"Backfilled {n}"}
    )
    pm = await api.v1.payment_methods.attach_async("pm_card_visa", params={"customer": customer.id})
    await api.v1.subscriptions.create_async(
        params={
            "customer": customer.id,
            "items": [{"price": price, "quantity": 1 + n % 3}],
            "default_payment_method": pm.id,
        }
    )


async def test_billfold_sync_backfills_hundreds_of_objects_across_pages(
    db_pool: asyncpg.Pool,
    box: SecretBox,
    stripe_fake: StripeFake,
    stripe_api: stripe.StripeClient,
    secrets_key: str,
) -> None:
    site = await new_site(db_pool)
    key = f"sk_test_{secrets.token_hex(12)}"
    async with db_pool.acquire() as conn:
        await accounts.configure(conn, box, site, api_key=key)
    product = await stripe_api.v1.products.create_async(params={"name": "Backfill plan"})
    price = await stripe_api.v1.prices.create_async(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 700,
            "recurring": {"interval": "month"},
        }
    )
    for start in range(0, CUSTOMERS, 25):
        await asyncio.gather(
            *(_customer_with_plan(stripe_api, n, price.id) for n in range(start, start + 25))
        )
    # No webhook endpoint: the mirror knows nothing yet.
    assert (
        await db_pool.fetchval("SELECT count(*) FROM mirror.customers WHERE site_id = $1", site)
        == 0
    )
    env = {
        **os.environ,
        "BILLFOLD_STRIPE_API_BASE": stripe_fake.base_url,
        "BILLFOLD_BILLING_SECRETS_KEY": secrets_key,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from billfold.cli import main; main()",
        "sync",
        "--site",
        site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == (
        f"synced {CUSTOMERS} customers, {CUSTOMERS} subscriptions, {CUSTOMERS} invoices, "
        f"{CUSTOMERS} payment methods"
    )
    assert "customers 100" in err.decode()  # progress while it worked
    assert key not in out.decode() + err.decode()
    counts = await db_pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM mirror.customers WHERE site_id = $1) AS c,
               (SELECT count(*) FROM mirror.subscriptions WHERE site_id = $1) AS s,
               (SELECT count(*) FROM mirror.invoices WHERE site_id = $1) AS i,
               (SELECT count(*) FROM mirror.payment_methods WHERE site_id = $1) AS p
        """,
        site,
    )
    assert tuple(counts) == (CUSTOMERS,) * 4  # 600 objects
    assert await mismatches(db_pool, stripe_api, site, set()) == []


async def test_reconciliation_repairs_a_dropped_webhook(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox, eventually: Eventually
) -> None:
    api, pool = synced.api, synced.pool
    customer = await api.v1.customers.create_async(params={"email": "r@example.com", "name": "R"})
    card = await api.v1.payment_methods.attach_async(
        "pm_card_visa", params={"customer": customer.id}
    )
    other = await api.v1.customers.create_async(params={"email": "other@example.com"})
    await synced.settled(eventually)
    assert await mismatches(pool, api, synced.site_id, set()) == []

    # The endpoint is disabled for a while: these changes never reach billing-sync.
    endpoint = (await api.v1.webhook_endpoints.list_async()).data[0]
    await api.v1.webhook_endpoints.update_async(endpoint.id, params={"disabled": True})
    await api.v1.customers.update_async(customer.id, params={"name": "Renamed"})
    await api.v1.payment_methods.detach_async(card.id)
    await api.v1.customers.delete_async(other.id)
    await synced.settled(eventually)
    assert await mismatches(pool, api, synced.site_id, {other.id}) != []

    # Only this test's account is due (others belong to earlier tests' fakes).
    await pool.execute(
        "UPDATE mirror.stripe_accounts SET reconciled_at = now() WHERE site_id <> $1",
        synced.site_id,
    )
    gateway = StripeGateway(settings)
    reconciler = Reconciler(
        settings.model_copy(update={"reconcile_interval": 1.0}), pool, gateway, box
    )
    await reconciler.start()
    try:

        async def repaired() -> bool:
            return await mismatches(pool, api, synced.site_id, {other.id}) == []

        await eventually(repaired, timeout=30)
    finally:
        await reconciler.stop()
        await gateway.close()
    assert reconciler.runs >= 1
    row = await pool.fetchrow(
        "SELECT name, deleted_at FROM mirror.customers WHERE stripe_id = $1", customer.id
    )
    assert row["name"] == "Renamed"
    assert row["deleted_at"] is None
    assert await pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM mirror.customers WHERE stripe_id = $1", other.id
    )
    assert await pool.fetchval(
        "SELECT detached_at IS NOT NULL FROM mirror.payment_methods WHERE stripe_id = $1", card.id
    )
    # The repairs are changes like any other: each emitted its event.
    kinds = [(e["type"], e["data"].get("deleted")) for e in await synced.outbox()]
    assert ("payment_method.updated", True) in kinds
    assert ("customer.updated", True) in kinds


async def test_processed_events_are_swept_after_their_retention(
    db_pool: asyncpg.Pool, settings: BillingSyncSettings, box: SecretBox
) -> None:
    site = await new_site(db_pool)
    rows = {
        "evt_old_done": "now() - interval '31 days'",
        "evt_new_done": "now() - interval '1 day'",
        "evt_old_pending": "NULL",
    }
    for event_id, processed in rows.items():
        await db_pool.execute(
            "INSERT INTO mirror.stripe_events (id, site_id, type, payload, received_at, "  # noqa: S608
            f"processed_at) VALUES ($1, $2, 'customer.updated', '{{}}', "
            f"now() - interval '40 days', {processed})",
            f"{event_id}_{site}",
            site,
        )
    gateway = StripeGateway(settings)
    try:
        swept = await Reconciler(settings, db_pool, gateway, box).sweep()
    finally:
        await gateway.close()
    assert swept >= 1
    left = {
        r["id"]
        for r in await db_pool.fetch("SELECT id FROM mirror.stripe_events WHERE site_id = $1", site)
    }
    assert left == {f"evt_new_done_{site}", f"evt_old_pending_{site}"}


async def test_replicas_claim_each_account_once_per_interval(
    db_pool: asyncpg.Pool, settings: BillingSyncSettings, box: SecretBox
) -> None:
    # Only this test's accounts are due.
    await db_pool.execute("UPDATE mirror.stripe_accounts SET reconciled_at = now()")
    key = f"sk_test_{secrets.token_hex(12)}"
    first, shared, alone = [await new_site(db_pool) for _ in range(3)]
    async with db_pool.acquire() as conn:
        await accounts.configure(conn, box, first, api_key=key)
        await accounts.configure(conn, box, shared, api_key=key)  # same account, not default
        await accounts.configure(conn, box, alone, api_key=f"sk_test_{secrets.token_hex(12)}")
    gateway = StripeGateway(settings)
    try:
        replicas = [Reconciler(settings, db_pool, gateway, box) for _ in range(3)]
        claimed = await asyncio.gather(*(r.claim() for r in replicas))
        claimed += await asyncio.gather(*(r.claim() for r in replicas))
    finally:
        await gateway.close()
    # One claim per account (its default site), whichever replica got it; none twice.
    assert sorted(c for c in claimed if c) == sorted([first, alone])
