"""Customers, tax ids and payment methods through the official ``stripe`` library."""

from __future__ import annotations

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake


def test_customer_crud_and_fields(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    created = client.v1.customers.create(
        params={
            "email": "ada@example.com",
            "name": "Ada",
            "phone": "+4915112345678",
            "address": {"line1": "Main St 1", "city": "Berlin", "country": "DE"},
            "metadata": {"tenant": "t1", "plan": "pro"},
        }
    )
    assert created.id.startswith("cus_")
    assert created.object == "customer"
    assert created.address.city == "Berlin"
    assert created.address.postal_code is None
    assert created.livemode is False
    assert created.invoice_prefix
    fetched = client.v1.customers.retrieve(created.id)
    assert fetched.to_dict() == created.to_dict()

    updated = client.v1.customers.update(
        created.id, params={"phone": "+4930000000", "metadata": {"plan": "", "seats": "3"}}
    )
    assert updated.phone == "+4930000000"
    assert updated.metadata.to_dict() == {"tenant": "t1", "seats": "3"}  # "" deletes a key
    assert client.v1.customers.retrieve(created.id).metadata.to_dict() == {
        "tenant": "t1",
        "seats": "3",
    }

    numeric = client.v1.customers.update(created.id, params={"metadata": {"1": "a", "2": "b"}})
    assert numeric.metadata.to_dict() == {"tenant": "t1", "seats": "3", "1": "a", "2": "b"}

    deleted = client.v1.customers.delete(created.id)
    assert deleted.deleted is True
    assert deleted.id == created.id
    assert client.v1.customers.retrieve(created.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.update(created.id, params={"name": "x"})
    assert err.value.http_status == 404
    assert err.value.code == "resource_missing"


def test_list_filters_by_email_newest_first(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    ids = [
        client.v1.customers.create(params={"email": f"u{i % 3}@example.com"}).id for i in range(9)
    ]
    listed = client.v1.customers.list(params={"email": "u1@example.com"})
    assert [c.id for c in listed.data] == [ids[7], ids[4], ids[1]]
    assert listed.has_more is False
    assert listed.url == "/v1/customers"
    every = [c.id for c in client.v1.customers.list(params={"limit": 2}).auto_paging_iter()]
    assert every == ids[::-1]


def test_tax_ids(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "tax@example.com"})
    vat = client.v1.customers.tax_ids.create(
        customer.id, params={"type": "eu_vat", "value": "DE123456789"}
    )
    assert (vat.country, vat.type, vat.customer, vat.owner.customer) == (
        "DE",
        "eu_vat",
        customer.id,
        customer.id,
    )
    ein = client.v1.customers.tax_ids.create(
        customer.id, params={"type": "us_ein", "value": "12-3456789"}
    )
    listed = client.v1.customers.tax_ids.list(customer.id)
    assert [t.id for t in listed.data] == [ein.id, vat.id]
    gone = client.v1.customers.tax_ids.delete(customer.id, vat.id)
    assert gone.deleted is True
    assert [t.id for t in client.v1.customers.tax_ids.list(customer.id).data] == [ein.id]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.tax_ids.create(customer.id, params={"type": "eu_vat", "value": "x"})
    assert (err.value.http_status, err.value.code, err.value.param) == (
        400,
        "tax_id_invalid",
        "value",
    )


def test_tax_ids_are_includable_on_the_customer(stripe_client: stripe.StripeClient) -> None:
    """``expand[]=tax_ids`` embeds the list's first page (10, newest first, has_more);
    without it the customer has no tax_ids field, as at Stripe."""
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "taxes@example.com"})
    assert "tax_ids" not in client.v1.customers.retrieve(customer.id)
    made = [
        client.v1.customers.tax_ids.create(
            customer.id, params={"type": "us_ein", "value": f"12-34567{i:02d}"}
        ).id
        for i in range(11)
    ]
    got = client.v1.customers.retrieve(customer.id, params={"expand": ["tax_ids"]})
    assert got.tax_ids is not None
    assert [t.id for t in got.tax_ids.data] == made[::-1][:10]
    assert (got.tax_ids.has_more, got.tax_ids.url) == (True, f"/v1/customers/{customer.id}/tax_ids")
    client.v1.customers.tax_ids.delete(customer.id, made[0])
    got = client.v1.customers.retrieve(customer.id, params={"expand": ["tax_ids"]})
    assert got.tax_ids is not None
    assert [t.id for t in got.tax_ids.data] == made[::-1][:10]
    assert got.tax_ids.has_more is False


def test_payment_methods_attach_detach_default(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "pm@example.com"})
    visa = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    assert visa.id.startswith("pm_")
    assert visa.id != "pm_card_visa"
    assert (visa.card.brand, visa.card.last4, visa.customer) == ("visa", "4242", customer.id)
    amex = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "378282246310005", "exp_month": 4, "exp_year": 2031},
            "billing_details": {"name": "Ada"},
        }
    )
    assert (amex.card.brand, amex.card.last4, amex.customer) == ("amex", "0005", None)
    client.v1.payment_methods.attach(amex.id, params={"customer": customer.id})
    listed = client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert [p.id for p in listed.data] == [amex.id, visa.id]
    via_customer = client.v1.customers.payment_methods.list(customer.id)
    assert [p.id for p in via_customer.data] == [amex.id, visa.id]

    customer = client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": visa.id}}
    )
    assert customer.invoice_settings.default_payment_method == visa.id
    expanded = client.v1.customers.retrieve(
        customer.id, params={"expand": ["invoice_settings.default_payment_method"]}
    )
    assert expanded.invoice_settings.default_payment_method.card.last4 == "4242"

    detached = client.v1.payment_methods.detach(visa.id)
    assert detached.customer is None
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_methods.attach(visa.id, params={"customer": customer.id})
    types = stripe_fake.event_types()
    assert types.count("payment_method.attached") == 2
    assert "payment_method.detached" in types


def test_default_payment_method_must_belong_to_customer(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    loose = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": loose.id}}
        )
    assert err.value.param == "invoice_settings[default_payment_method]"


@pytest.mark.parametrize(
    ("test_id", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_declined_cards_fail_on_attach(
    stripe_client: stripe.StripeClient, test_id: str, decline_code: str
) -> None:
    customer = stripe_client.v1.customers.create()
    with pytest.raises(stripe.CardError) as err:
        stripe_client.v1.payment_methods.attach(test_id, params={"customer": customer.id})
    assert err.value.http_status == 402
    assert err.value.code == "card_declined"
    assert err.value.error.decline_code == decline_code
    assert err.value.error.type == "card_error"
    assert stripe_client.v1.payment_methods.list(params={"customer": customer.id}).data == []


def test_bad_card_numbers(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as err:
        stripe_client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": "4242424242424241", "exp_month": 1, "exp_year": 2030},
            }
        )
    assert err.value.code == "incorrect_number"
    with pytest.raises(stripe.CardError) as live:
        stripe_client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": "4111111111111111", "exp_month": 1, "exp_year": 2030},
            }
        )
    assert "non test (live) card" in str(live.value.user_message)
