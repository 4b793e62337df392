"""Subscriptions and invoices through the official ``stripe`` library."""

from __future__ import annotations

import urllib.request

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake

DAY = 86_400


def _customer(client: stripe.StripeClient, card: str = "pm_card_visa") -> stripe.Customer:
    customer = client.v1.customers.create(params={"email": "sub@example.com", "name": "Sub"})
    pm = client.v1.payment_methods.attach(card, params={"customer": customer.id})
    return client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )


def _price(client: stripe.StripeClient, amount: int, name: str = "Plan") -> stripe.Price:
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": name},
        }
    )


def test_create_with_several_items(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = _customer(client)
    base, seats = _price(client, 2000, "Base"), _price(client, 300, "Seat")
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": base.id}, {"price": seats.id, "quantity": 4}],
            "metadata": {"tenant": "acme"},
            "expand": ["latest_invoice", "customer"],
        }
    )
    assert sub.status == "active"
    assert sub.customer.id == customer.id
    assert [(i.price.id, i.quantity) for i in sub["items"].data] == [(base.id, 1), (seats.id, 4)]
    item = sub["items"].data[0]
    assert item.plan.id == base.id
    assert item.plan.amount == 2000
    assert item.current_period_start == sub.start_date == sub.billing_cycle_anchor
    invoice = sub.latest_invoice
    assert (invoice.status, invoice.total, invoice.amount_paid) == ("paid", 3200, 3200)
    assert invoice.billing_reason == "subscription_create"
    assert invoice.parent.type == "subscription_details"
    assert invoice.parent.subscription_details.metadata.tenant == "acme"
    line = invoice.lines.data[1]
    assert (line.amount, line.quantity) == (1200, 4)
    assert line.pricing.price_details.price == seats.id
    assert line.parent.subscription_item_details.subscription_item == sub["items"].data[1].id
    assert line.description == "4 \u00d7 Seat (at $3.00 / month)"
    assert stripe_fake.event_types()[-6:] == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",  # incomplete -> active once the invoice is paid
    ]


def test_update_metadata_items_and_cancel_flags(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": _price(client, 1000).id}]}
    )
    sub = client.v1.subscriptions.update(sub.id, params={"metadata": {"a": "1"}})
    sub = client.v1.subscriptions.update(sub.id, params={"metadata": {"b": "2"}})
    assert client.v1.subscriptions.retrieve(sub.id).metadata.to_dict() == {"a": "1", "b": "2"}

    item = sub["items"].data[0]
    sub = client.v1.subscriptions.update(sub.id, params={"items": [{"id": item.id, "quantity": 3}]})
    assert sub["items"].data[0].quantity == 3

    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert sub.cancel_at_period_end
    assert sub.cancel_at == item.current_period_end
    assert sub.canceled_at is not None
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert (sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at) == (False, None, None)

    canceled = client.v1.subscriptions.cancel(
        sub.id, params={"cancellation_details": {"comment": "too pricey"}}
    )
    assert canceled.status == "canceled"
    assert canceled.ended_at is not None
    assert canceled.cancellation_details.comment == "too pricey"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    kept = client.v1.subscriptions.update(sub.id, params={"metadata": {"after": "cancel"}})
    assert kept.metadata.after == "cancel"


def test_list_by_customer_and_status(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    price = _price(client, 500)
    alice, bob = _customer(client), _customer(client)
    a1 = client.v1.subscriptions.create(
        params={"customer": alice.id, "items": [{"price": price.id}]}
    )
    a2 = client.v1.subscriptions.create(
        params={"customer": alice.id, "items": [{"price": price.id}], "trial_period_days": 10}
    )
    client.v1.subscriptions.create(params={"customer": bob.id, "items": [{"price": price.id}]})
    client.v1.subscriptions.cancel(a1.id)

    def ids(**params: str) -> list[str]:
        return [s.id for s in client.v1.subscriptions.list(params=params).data]  # type: ignore[arg-type]

    assert ids(customer=alice.id) == [a2.id]  # canceled ones are hidden by default
    assert ids(customer=alice.id, status="all") == [a2.id, a1.id]
    assert ids(customer=alice.id, status="canceled") == [a1.id]
    assert ids(status="trialing") == [a2.id]


def test_send_invoice_collection(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "ap@example.com"})
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": _price(client, 4200).id}],
            "collection_method": "send_invoice",
            "days_until_due": 14,
        }
    )
    assert sub.status == "active"
    assert sub.days_until_due == 14
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.status == "open"
    assert invoice.collection_method == "send_invoice"
    assert invoice.due_date == invoice.status_transitions.finalized_at + 14 * DAY
    assert invoice.amount_due == 4200
    assert invoice.amount_paid == 0
    assert invoice.hosted_invoice_url.startswith(stripe_fake.base_url)

    paid = client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    assert paid.status == "paid"
    assert paid.status_transitions.paid_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(invoice.id)


def test_first_payment_declined(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = _customer(client, card="pm_card_chargeCustomerFail")
    price = _price(client, 700)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.status, invoice.attempt_count) == ("open", 1)
    with pytest.raises(stripe.CardError) as err:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert err.value.http_status == 402
    assert err.value.code == "card_declined"
    assert len(client.v1.subscriptions.list(params={"customer": customer.id}).data) == 1
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(invoice.id)


def test_invoice_void_uncollectible_and_documents(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "docs@example.com", "name": "Doc"})
    price = _price(client, 1999, "Docs")

    def open_invoice() -> stripe.Invoice:
        sub = client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id}],
                "collection_method": "send_invoice",
                "days_until_due": 7,
            }
        )
        return client.v1.invoices.retrieve(str(sub.latest_invoice))

    first = open_invoice()
    voided = client.v1.invoices.void_invoice(first.id)
    assert voided.status == "void"
    assert voided.status_transitions.voided_at is not None
    second = open_invoice()
    assert second.number.endswith("-0002")
    assert first.number.endswith("-0001")
    bad = client.v1.invoices.mark_uncollectible(second.id)
    assert bad.status == "uncollectible"
    statuses = {i.id: i.status for i in client.v1.invoices.list(params={"customer": customer.id})}
    assert statuses == {first.id: "void", second.id: "uncollectible"}
    assert [i.id for i in client.v1.invoices.list(params={"status": "void"}).data] == [first.id]

    with urllib.request.urlopen(second.hosted_invoice_url, timeout=10) as page:  # noqa: S310
        html = page.read().decode()
    assert second.number in html
    assert "$19.99" in html
    with urllib.request.urlopen(second.invoice_pdf, timeout=10) as pdf:  # noqa: S310
        assert pdf.headers["Content-Type"] == "application/pdf"
        body = pdf.read()
    assert body.startswith(b"%PDF-1.4")
    assert body.rstrip().endswith(b"%%EOF")
    assert second.number.encode() in body
    startxref = int(body.rsplit(b"startxref", 1)[1].split()[0])
    xref = body[startxref:].split(b"\n")
    assert xref[0] == b"xref"
    count = int(xref[1].split()[1])
    for number in range(1, count):  # every object sits at the byte offset the table claims
        offset = int(xref[2 + number][:10])
        assert body[offset:].startswith(f"{number} 0 obj".encode())
    lines = client.v1.invoices.line_items.list(second.id)
    assert [line.amount for line in lines.data] == [1999]


def test_upcoming_invoice_preview(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = _customer(client)
    price = _price(client, 1000)
    bigger = _price(client, 2500, "Bigger")
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id, "quantity": 2}]}
    )
    end = sub["items"].data[0].current_period_end
    preview = client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert preview.id.startswith("upcoming_in_")
    assert (preview.total, preview.amount_due, preview.status) == (2000, 2000, "draft")
    assert preview.lines.data[0].period.start == end
    assert preview.next_payment_attempt == end + 3600
    changed = client.v1.invoices.create_preview(
        params={
            "customer": customer.id,
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": sub["items"].data[0].id, "price": bigger.id, "quantity": 1}]
            },
        }
    )
    assert changed.total == 2500
    by_customer = client.v1.invoices.create_preview(params={"customer": customer.id})
    assert by_customer.total == 2000
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert (err.value.http_status, err.value.code) == (404, "invoice_upcoming_none")


def test_subscription_validation_errors(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(params={"customer": customer.id})
    assert (err.value.code, err.value.param) == ("parameter_missing", "items")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"price": "price_missing"}]}
        )
    assert (err.value.http_status, err.value.param) == (404, "items[0][price]")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(
            params={"customer": "cus_missing", "items": [{"price": "price_missing"}]}
        )
    assert (err.value.http_status, err.value.param) == (404, "customer")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": _price(client, 1).id}],
                "collection_method": "send_invoice",
            }
        )
    assert err.value.param == "days_until_due"


def test_default_incomplete_waits_for_payment(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": _price(client, 2500).id}],
            "payment_behavior": "default_incomplete",
        }
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.status, invoice.attempt_count, invoice.amount_remaining) == ("open", 0, 2500)
    assert client.v1.invoices.pay(invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
