"""Convergence: whatever the order, duplication and delay of Stripe's webhooks, the mirror
ends equal to Stripe's state.

A few hundred events over many customers, subscriptions, invoices and payment methods are
delivered by the fake Stripe reordered (batches reversed), duplicated and delayed, to
billing-sync's real endpoint; then the mirror is compared with the fake's state field by
field, and each real change produced exactly one outbox event per delivery round.
"""

from __future__ import annotations

import asyncio

import stripe

from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway
from billing_sync.worker import Worker

from .compare import mismatches
from .conftest import Eventually, Synced

CUSTOMERS = 18


async def _one_customer(api: stripe.StripeClient, n: int, prices: list[str]) -> str | None:
    """A customer's life: profile edits, cards, a default, a subscription and its changes.
    Returns the id if the customer ends deleted."""
    customer = await api.v1.customers.create_async(
        params={
            "email": f"c{n}@example.com",
            "name": f"Customer {n}",
            "metadata": {"external_id": f"ext-{n}"},
        }
    )
    await api.v1.customers.update_async(
        customer.id,
        params={"phone": f"+3161234{n:04d}", "address": {"city": f"City {n}", "country": "NL"}},
    )
    cards = []
    for test_card in ("pm_card_visa", "pm_card_mastercard"):
        pm = await api.v1.payment_methods.attach_async(test_card, params={"customer": customer.id})
        cards.append(pm.id)
    await api.v1.customers.update_async(
        customer.id, params={"invoice_settings": {"default_payment_method": cards[n % 2]}}
    )
    sub = await api.v1.subscriptions.create_async(
        params={
            "customer": customer.id,
            "items": [{"price": prices[n % len(prices)], "quantity": 1 + n % 4}],
        }
    )
    item = sub["items"].data[0]
    await api.v1.subscriptions.update_async(
        sub.id, params={"items": [{"id": item.id, "quantity": 5 + n % 3}]}
    )
    if n % 3 == 0:
        await api.v1.subscriptions.update_async(sub.id, params={"cancel_at_period_end": True})
    if n % 4 == 1:
        await api.v1.subscriptions.cancel_async(sub.id)
    if n % 5 == 2:
        await api.v1.payment_methods.detach_async(cards[1 - n % 2])
    await api.v1.customers.update_async(customer.id, params={"name": f"Customer {n} (final)"})
    if n % 6 == 5:
        await api.v1.customers.delete_async(customer.id)
        return customer.id
    return None


async def test_shuffled_duplicated_delayed_events_converge(
    synced: Synced, eventually: Eventually, settings: BillingSyncSettings, box: SecretBox
) -> None:
    # A second replica's worker on the same database: claims and per-customer locks
    # must keep the two from processing one customer at once.
    gateway = StripeGateway(settings)
    replica = Worker(settings, synced.pool, gateway, box, concurrency=2)
    await replica.start()
    try:
        await _scenario(synced, eventually)
    finally:
        await replica.stop()
        await gateway.close()


async def _scenario(synced: Synced, eventually: Eventually) -> None:
    api = synced.api
    product = await api.v1.products.create_async(params={"name": "Team"})
    prices = [
        (
            await api.v1.prices.create_async(
                params={
                    "product": product.id,
                    "currency": "eur",
                    "unit_amount": amount,
                    "recurring": {"interval": "month"},
                }
            )
        ).id
        for amount in (900, 1900, 4900)
    ]
    synced.fake.set_delivery(delay=0.02, duplicate=True, reorder=True)
    results = await asyncio.gather(*(_one_customer(api, n, prices) for n in range(CUSTOMERS)))
    deleted = {r for r in results if r}
    # A month later: renewals (subscription updates, new invoices, payments).
    await asyncio.to_thread(synced.fake.advance, 32 * 86400)
    await asyncio.to_thread(synced.fake.advance, 2 * 3600)
    await synced.settled(eventually, timeout=40)

    events = int(
        await synced.pool.fetchval(
            "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1", synced.site_id
        )
    )
    assert events >= 250, events
    sent = [d for d in synced.fake.deliveries() if d["ok"]]
    assert len(sent) == events  # every event accepted once (the duplicates were no-ops)
    assert await mismatches(synced.pool, api, synced.site_id, deleted) == []

    # Replaying every event again (as a late duplicate storm would) changes nothing and
    # emits nothing: the mirror already equals Stripe.
    before = len(await synced.outbox())
    await synced.pool.execute(
        "UPDATE mirror.stripe_events SET processed_at = NULL WHERE site_id = $1", synced.site_id
    )
    await synced.settled(eventually, timeout=40)
    assert len(await synced.outbox()) == before
    assert await mismatches(synced.pool, api, synced.site_id, deleted) == []
