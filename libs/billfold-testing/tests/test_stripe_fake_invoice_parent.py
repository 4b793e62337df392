"""Invoices and their lines name the subscription that generated them the way today's API does:
``invoice.parent.subscription_details`` and ``line.parent.subscription_item_details``."""

from __future__ import annotations

import stripe
from stripe._invoice import Invoice
from stripe._invoice_line_item import InvoiceLineItem

from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup


def _subscription(
    client: stripe.StripeClient, **extra: object
) -> tuple[stripe.Customer, stripe.Price, stripe.Subscription]:
    customer = client.v1.customers.create(params={"email": "parent@example.com"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Parent"},
        }
    )
    params: dict[str, object] = {
        "customer": customer.id,
        "items": [{"price": price.id}],
        "metadata": {"plan": "gold"},
        **extra,
    }
    sub = client.v1.subscriptions.create(params=params)  # type: ignore[arg-type]
    return customer, price, sub


def test_invoice_parent_replaces_top_level_subscription(
    stripe_client: stripe.StripeClient,
) -> None:
    client = stripe_client
    customer, _price, sub = _subscription(client)
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    raw = invoice.to_dict()
    assert "subscription" not in raw  # removed from the API in favour of parent
    assert "subscription" not in Invoice.__annotations__
    assert raw["parent"] == {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {"plan": "gold"}, "subscription": sub.id},
    }
    # The list filter and expansion follow the new place.
    listed = client.v1.invoices.list(params={"subscription": sub.id})
    assert [i.id for i in listed.data] == [invoice.id]
    other_customer = client.v1.customers.create()
    assert other_customer.id != customer.id
    expanded = client.v1.invoices.retrieve(
        invoice.id, params={"expand": ["parent.subscription_details.subscription"]}
    )
    assert expanded.parent is not None
    assert expanded.parent.subscription_details is not None
    assert expanded.parent.subscription_details.subscription.id == sub.id  # type: ignore[union-attr]


def test_line_parent_matches_the_library_shape(stripe_client: stripe.StripeClient) -> None:
    _customer, price, sub = _subscription(stripe_client)
    invoice = stripe_client.v1.invoices.retrieve(str(sub.latest_invoice))
    line = invoice.lines.data[0].to_dict()
    parent = line["parent"]
    assert parent["type"] == "subscription_item_details"
    assert parent["invoice_item_details"] is None
    assert set(parent) == {
        k for k in InvoiceLineItem.Parent.__annotations__ if not k.startswith("_")
    }
    details = parent["subscription_item_details"]
    assert set(details) == {
        k
        for k in InvoiceLineItem.Parent.SubscriptionItemDetails.__annotations__
        if not k.startswith("_")
    }
    assert details["subscription"] == sub.id
    assert details["subscription_item"] == sub["items"].data[0].id
    assert details["proration"] is False
    assert line["pricing"]["price_details"]["price"] == price.id


def test_amount_paid_off_stripe_is_includable(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    client = stripe_client
    _customer, _price, card_sub = _subscription(client)
    paid = client.v1.invoices.retrieve(str(card_sub.latest_invoice))
    assert "amount_paid_off_stripe" not in paid.to_dict()  # only when asked for
    paid = client.v1.invoices.retrieve(paid.id, params={"expand": ["amount_paid_off_stripe"]})
    assert (paid.amount_paid, paid.amount_paid_off_stripe) == (900, 0)

    _c, _p, manual = _subscription(client, collection_method="send_invoice", days_until_due=5)
    invoice_id = str(manual.latest_invoice)
    client.v1.invoices.pay(invoice_id, params={"paid_out_of_band": True})
    listed = client.v1.invoices.list(
        params={"subscription": manual.id, "expand": ["data.amount_paid_off_stripe"]}
    )
    [out_of_band] = listed.data
    assert (out_of_band.status, out_of_band.amount_paid) == ("paid", 900)
    assert out_of_band.amount_paid_off_stripe == 900
    # "The property isn't available in event payloads."
    stripe_fake.drain()
    invoice_events = [
        r.json["data"]["object"]
        for r in stripe_webhook.receiver.received
        if r.json["data"]["object"]["object"] == "invoice"
    ]
    assert invoice_events
    assert all("amount_paid_off_stripe" not in obj for obj in invoice_events)
    assert all("subscription" not in obj for obj in invoice_events)


def test_new_subscription_preview_lines_name_temporary_items(
    stripe_client: stripe.StripeClient,
) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 400,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Preview"},
        }
    )
    preview = client.v1.invoices.create_preview(
        params={"customer": customer.id, "subscription_details": {"items": [{"price": price.id}]}}
    )
    [line] = preview.lines.data
    details = line.parent.subscription_item_details
    assert details is not None
    assert details.subscription_item.startswith("si_tmp_")
    assert line.id.startswith("il_tmp_")
    assert "subscription" not in preview.to_dict()

    # A preview of an existing subscription keeps the real item id for existing items and
    # gives an added one a temporary id.
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 3}
    )
    extra = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Extra"},
        }
    )
    changed = client.v1.invoices.create_preview(
        params={"subscription": sub.id, "subscription_details": {"items": [{"price": extra.id}]}}
    )
    items = {
        line.pricing.price_details.price: line.parent.subscription_item_details.subscription_item  # type: ignore[union-attr]
        for line in changed.lines.data
    }
    assert items[price.id] == sub["items"].data[0].id
    assert items[extra.id].startswith("si_tmp_")
    assert changed.parent is not None
    assert changed.parent.subscription_details is not None
    assert changed.parent.subscription_details.subscription == sub.id
