"""Shared by the shape tests: one live object of every resource the fake serves, fetched
through the real ``stripe`` client, plus every webhook payload sent while making them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup


@dataclass
class LiveObjects:
    #: resource name (as in ``shapes.resources()``) -> the object as the client got it
    objects: dict[str, dict[str, Any]]
    #: ``data.object`` of every webhook delivered while they were made
    payloads: list[dict[str, Any]]
    #: the webhook endpoint as created (the only response carrying ``secret``)
    created_endpoint: dict[str, Any]
    #: an upcoming-invoice preview (an invoice)
    preview: dict[str, Any]

    def payloads_by_kind(self) -> list[tuple[str, dict[str, Any]]]:
        """Webhook payloads with their shapes name (``deleted_customer`` for a deleted one)."""
        return [
            (f"deleted_{p['object']}" if p.get("deleted") else str(p["object"]), p)
            for p in self.payloads
        ]


@pytest.fixture
def live_objects(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> LiveObjects:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "shape@example.com"})
    tax_id = client.v1.customers.tax_ids.create(
        customer.id, params={"type": "eu_vat", "value": "FR12345678901"}
    )
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    customer = client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Shape"},
        }
    )
    product = client.v1.products.retrieve(str(price.product))
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    [payment] = client.v1.invoice_payments.list(params={"invoice": invoice.id}).data
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    preview = client.v1.invoices.create_preview(params={"subscription": sub.id})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "customer": customer.id,
            "success_url": "https://x.test/ok",
            "currency": "usd",
        }
    )
    setup_intent = client.v1.setup_intents.retrieve(str(session.setup_intent))
    meter = client.v1.billing.meters.create(
        params={"display_name": "m", "event_name": "m", "default_aggregation": {"formula": "sum"}}
    )
    meter_event = client.v1.billing.meter_events.create(
        params={"event_name": "m", "payload": {"stripe_customer_id": customer.id, "value": "1"}}
    )
    now = stripe_fake.now()
    minute = now - now % 60  # Stripe wants summary bounds on minute boundaries
    summary = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={"customer": customer.id, "start_time": minute, "end_time": minute + 120},
    ).data[0]
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": now})
    endpoint = client.v1.webhook_endpoints.retrieve(stripe_webhook.endpoint.id)
    spare = client.v1.webhook_endpoints.create(
        params={"url": "https://x.test/hook", "enabled_events": ["customer.created"]}
    )
    event = client.v1.events.list(params={"limit": 1}).data[0]
    objects: dict[str, stripe.StripeObject] = {
        "customer": customer,
        "tax_id": tax_id,
        "payment_method": pm,
        "price": price,
        "product": product,
        "subscription": sub,
        "subscription_item": sub["items"].data[0],
        "plan": sub["items"].data[0].plan,
        "invoice": invoice,
        "line_item": invoice.lines.data[0],
        "invoice_payment": payment,
        "payment_intent": intent,
        "checkout.session": session,
        "setup_intent": setup_intent,
        "billing.meter": meter,
        "billing.meter_event": meter_event,
        "billing.meter_event_summary": summary,
        "test_helpers.test_clock": clock,
        "webhook_endpoint": endpoint,
        "event": event,
        "deleted_tax_id": client.v1.customers.tax_ids.delete(customer.id, tax_id.id),
        "deleted_test_helpers.test_clock": client.v1.test_helpers.test_clocks.delete(clock.id),
        "deleted_webhook_endpoint": client.v1.webhook_endpoints.delete(spare.id),
        "deleted_customer": client.v1.customers.delete(customer.id),
    }
    stripe_fake.drain()
    return LiveObjects(
        objects={name: obj.to_dict() for name, obj in objects.items()},
        payloads=[r.json["data"]["object"] for r in stripe_webhook.receiver.received],
        created_endpoint=stripe_webhook.endpoint.to_dict(),
        preview=preview.to_dict(),
    )
