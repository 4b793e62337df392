"""Objects the fake returns carry exactly the top-level fields of Stripe's published examples
(``fixtures3.json`` from Stripe's OpenAPI repository, trimmed to the resources the fake serves
and kept in ``tests/data/stripe``; see the SOURCE file there), less the fields today's API
removed since. ``test_stripe_fake_library_shapes.py`` checks against the pinned library."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import stripe

from billfold_testing.stripe_fake import shapes
from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup

FIXTURES = Path(__file__).resolve().parent / "data" / "stripe" / "fixtures3.trimmed.json"


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


#: Fields the published examples (an older API version) still carry but today's API removed.
REMOVED_SINCE_FIXTURES: dict[str, set[str]] = {
    # Moved to parent.subscription_details.subscription (the library has no such field).
    "invoice": {"subscription"},
}


def _expected(published: dict[str, Any], resource: str) -> set[str]:
    return set(published[resource]) - REMOVED_SINCE_FIXTURES.get(resource, set())


@pytest.mark.parametrize("resource", shapes.resources())
def test_templates_match_published_keys(published: dict[str, Any], resource: str) -> None:
    assert set(shapes.blank(resource)) == _expected(published, resource)


def _keys(obj: stripe.StripeObject) -> set[str]:
    return set(obj.to_dict())


def test_live_objects_match_published_keys(
    published: dict[str, Any],
    stripe_fake: StripeFake,
    stripe_client: stripe.StripeClient,
    stripe_webhook: WebhookSetup,
) -> None:
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
    preview = client.v1.invoices.create_preview(params={"subscription": sub.id})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "customer": customer.id,
            "success_url": "https://x.test/ok",
            "currency": "usd",
        }
    )
    intent = client.v1.setup_intents.retrieve(str(session.setup_intent))
    meter = client.v1.billing.meters.create(
        params={"display_name": "m", "event_name": "m", "default_aggregation": {"formula": "sum"}}
    )
    meter_event = client.v1.billing.meter_events.create(
        params={"event_name": "m", "payload": {"stripe_customer_id": customer.id, "value": "1"}}
    )
    now = stripe_fake.now()
    summary = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer.id, "start_time": now - 60, "end_time": now + 60}
    ).data[0]
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": now})
    endpoint = client.v1.webhook_endpoints.retrieve(stripe_webhook.endpoint.id)
    event = client.v1.events.list(params={"limit": 1}).data[0]
    checks: dict[str, stripe.StripeObject] = {
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
        "checkout.session": session,
        "setup_intent": intent,
        "billing.meter": meter,
        "billing.meter_event": meter_event,
        "billing.meter_event_summary": summary,
        "test_helpers.test_clock": clock,
        "webhook_endpoint": endpoint,
        "event": event,
        "deleted_tax_id": client.v1.customers.tax_ids.delete(customer.id, tax_id.id),
        "deleted_customer": client.v1.customers.delete(customer.id),
    }
    for resource, obj in checks.items():
        assert _keys(obj) == _expected(published, resource), resource
    assert _keys(preview) == _expected(published, "invoice")
    # Only the creation response carries the webhook signing secret.
    assert _keys(stripe_webhook.endpoint) == set(published["webhook_endpoint"]) | {"secret"}
    stripe_fake.drain()
    for received in stripe_webhook.receiver.received:
        data = received.json["data"]["object"]
        kind = data["object"] if not data.get("deleted") else f"deleted_{data['object']}"
        assert set(data) == _expected(published, kind), kind


def test_hosted_invoice_url_is_served(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create()
    price = stripe_client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month"},
            "product_data": {"name": "U"},
        }
    )
    sub = stripe_client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "collection_method": "send_invoice",
            "days_until_due": 3,
        }
    )
    invoice = stripe_client.v1.invoices.retrieve(str(sub.latest_invoice))
    parsed = urllib.parse.urlparse(invoice.hosted_invoice_url)
    assert parsed.hostname == "127.0.0.1"
    with urllib.request.urlopen(invoice.hosted_invoice_url, timeout=10) as page:  # noqa: S310
        assert page.status == 200
