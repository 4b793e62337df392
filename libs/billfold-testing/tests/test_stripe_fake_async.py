"""The async side of the official library (``*_async`` methods over aiohttp) against the fake,
with a real webhook receiver."""

from __future__ import annotations

import asyncio

import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup, post_control

DAY = 86_400


async def test_async_subscription_flow(
    stripe_fake: StripeFake, stripe_async_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    client = stripe_async_client
    customer = await client.v1.customers.create_async(params={"email": "async@example.com"})
    pm = await client.v1.payment_methods.attach_async(
        "pm_card_visa", params={"customer": customer.id}
    )
    price = await client.v1.prices.create_async(
        params={
            "currency": "gbp",
            "unit_amount": 1234,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Async"},
        }
    )
    sub = await client.v1.subscriptions.create_async(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": 2}],
            "default_payment_method": pm.id,
            "metadata": {"via": "async"},
        }
    )
    assert sub.status == "active"
    end = sub["items"].data[0].current_period_end
    # Control endpoints are plain HTTP, usable from outside Python too.
    await asyncio.to_thread(
        post_control, stripe_fake.base_url, "/_fake/clock/advance", to=end + 2 * 3600
    )
    invoices = await client.v1.invoices.list_async(params={"subscription": sub.id})
    assert [(i.status, i.total, i.billing_reason) for i in invoices.data] == [
        ("paid", 2468, "subscription_cycle"),
        ("paid", 2468, "subscription_create"),
    ]
    canceled = await client.v1.subscriptions.cancel_async(sub.id)
    assert canceled.status == "canceled"
    await asyncio.to_thread(stripe_fake.drain)
    received = stripe_webhook.receiver.received
    verified = [
        stripe.Webhook.construct_event(r.body, r.headers["Stripe-Signature"], stripe_webhook.secret)
        for r in received
    ]
    assert verified[-1].type == "customer.subscription.deleted"
    assert verified[-1].data.object.metadata.via == "async"
