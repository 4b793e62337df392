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
from billfold_testing.stripe_fake.library_shapes import library_fields

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
#: Fields the pinned API version has that the published examples predate (each is checked to
#: be annotated on the stripe library's class; test_stripe_fake_library_shapes.py checks the
#: complete field sets against the library).
ADDED_SINCE_FIXTURES: dict[str, set[str]] = {
    "checkout.session": {"optional_items"},
    "customer": {"customer_account"},
    "invoice": {"status_details"},
    "payment_intent": {"allowed_payment_method_types", "payment_record"},
    "product": {"tax_details"},
    "setup_intent": {"allowed_payment_method_types", "customer_account", "managed_payments"},
    "subscription": {"status_details"},
    "subscription_item": {"current_trial"},
}


def _expected(published: dict[str, Any], resource: str) -> set[str]:
    removed = REMOVED_SINCE_FIXTURES.get(resource, set())
    return (set(published[resource]) - removed) | ADDED_SINCE_FIXTURES.get(resource, set())


@pytest.mark.parametrize("resource", shapes.resources())
def test_templates_match_published_keys(published: dict[str, Any], resource: str) -> None:
    assert set(shapes.blank(resource)) == _expected(published, resource)


@pytest.mark.parametrize("resource", sorted(REMOVED_SINCE_FIXTURES.keys() | ADDED_SINCE_FIXTURES))
def test_departures_from_the_fixtures_follow_the_library(
    published: dict[str, Any], resource: str
) -> None:
    annotated = library_fields(resource)
    assert not REMOVED_SINCE_FIXTURES.get(resource, set()) & annotated
    assert REMOVED_SINCE_FIXTURES.get(resource, set()) <= set(published[resource])
    added = ADDED_SINCE_FIXTURES.get(resource, set())
    assert added <= annotated
    assert not added & set(published[resource])


def test_live_objects_match_published_keys(published: dict[str, Any], live_objects: Any) -> None:
    for resource, obj in live_objects.objects.items():
        assert set(obj) == _expected(published, resource), resource
    assert set(live_objects.preview) == _expected(published, "invoice")
    # Only the creation response carries the webhook signing secret.
    assert set(live_objects.created_endpoint) == _expected(published, "webhook_endpoint") | {
        "secret"
    }
    kinds = set()
    for kind, payload in live_objects.payloads_by_kind():
        assert set(payload) == _expected(published, kind), kind
        kinds.add(kind)
    assert {"customer", "invoice", "subscription", "payment_method"} <= kinds


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
