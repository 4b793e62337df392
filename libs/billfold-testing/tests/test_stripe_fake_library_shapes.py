"""The fake's objects have the top-level fields of the installed ``stripe`` library's typed
classes (generated from Stripe's OpenAPI spec for the pinned API version), less the fields
``library_shapes.NOT_SERVED`` documents Stripe itself leaves out; and a handful of values
the library types as a closed set."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from billfold_testing.stripe_fake import shapes
from billfold_testing.stripe_fake.library_shapes import (
    CLASSES,
    NOT_SERVED,
    library_fields,
    literal_values,
    served_fields,
)


@pytest.mark.parametrize("resource", shapes.resources())
def test_templates_have_the_library_fields(resource: str) -> None:
    fake = set(shapes.blank(resource))
    expected = served_fields(resource)
    assert fake - expected == set(), "fields the library doesn't have"
    assert expected - fake == set(), "library fields missing (add them, or document why not)"


def test_every_exception_names_a_real_field_and_a_reason() -> None:
    assert set(NOT_SERVED) <= set(CLASSES)
    for resource, fields in NOT_SERVED.items():
        for field, reason in fields.items():
            assert field in library_fields(resource), (resource, field)
            assert len(reason) > 15, (resource, field)


def test_every_resource_the_fake_serves_has_a_library_class() -> None:
    assert {r.removeprefix("deleted_") for r in shapes.resources()} == set(CLASSES)
    for name, cls in CLASSES.items():
        assert name == cls.OBJECT_NAME  # type: ignore[attr-defined]


def test_live_objects_have_the_library_fields(live_objects: Any) -> None:
    for resource, obj in live_objects.objects.items():
        assert set(obj) == served_fields(resource), resource
    assert set(live_objects.preview) == served_fields("invoice")
    assert set(live_objects.created_endpoint) == served_fields("webhook_endpoint") | {"secret"}
    for kind, payload in live_objects.payloads_by_kind():
        assert set(payload) == served_fields(kind), kind


def test_checkout_ui_mode_is_one_of_today(stripe_client: stripe.StripeClient) -> None:
    allowed = literal_values(stripe.checkout.Session.__annotations__["ui_mode"])
    assert "hosted_page" in allowed
    assert "hosted" not in allowed  # the old name the fake used to return
    session = stripe_client.v1.checkout.sessions.create(
        params={"mode": "setup", "success_url": "https://x.test/ok", "currency": "usd"}
    )
    assert session.ui_mode in allowed
    assert shapes.blank("checkout.session")["ui_mode"] in allowed


def test_includable_fields_arrive_only_with_expand(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 300,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Includable"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    plain = client.v1.invoices.retrieve(str(sub.latest_invoice)).to_dict()
    assert {"payments", "amount_paid_off_stripe"} & set(plain) == set()
    full = client.v1.invoices.retrieve(
        str(sub.latest_invoice), params={"expand": ["payments", "amount_paid_off_stripe"]}
    ).to_dict()
    assert set(full) == served_fields("invoice") | {"payments", "amount_paid_off_stripe"}
    # A field that is neither a reference nor includable still can't be expanded.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.retrieve(str(sub.latest_invoice), params={"expand": ["threshold"]})
