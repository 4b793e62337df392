"""Invoice payments: the default payment each finalized invoice gets, its PaymentIntent, and
how paying, voiding and paying out of band change them (``expand[]=payments`` and
``/v1/invoice_payments``)."""

from __future__ import annotations

import pytest
import stripe


def _invoice(client: stripe.StripeClient, *, send_invoice: bool) -> stripe.Invoice:
    customer = client.v1.customers.create()
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 700,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Payments"},
        }
    )
    extra: dict[str, object] = (
        {"collection_method": "send_invoice", "days_until_due": 10} if send_invoice else {}
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], **extra}  # type: ignore[typeddict-item]
    )
    return client.v1.invoices.retrieve(str(sub.latest_invoice))


def test_paid_invoice_has_a_paid_default_payment(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    invoice = _invoice(client, send_invoice=False)
    expanded = client.v1.invoices.retrieve(
        invoice.id, params={"expand": ["payments.data.payment.payment_intent"]}
    )
    [payment] = expanded.payments.data
    assert payment.object == "invoice_payment"
    assert payment.id.startswith("inpay_")
    assert (payment.invoice, payment.is_default, payment.status) == (invoice.id, True, "paid")
    assert (payment.amount_requested, payment.amount_paid, payment.currency) == (700, 700, "usd")
    assert payment.status_transitions.paid_at == invoice.status_transitions.paid_at
    assert payment.payment.type == "payment_intent"
    intent = payment.payment.payment_intent
    assert isinstance(intent, stripe.PaymentIntent)
    assert (intent.status, intent.amount, intent.amount_received) == ("succeeded", 700, 700)
    assert intent.customer == invoice.customer
    assert intent.payment_method is not None

    assert client.v1.invoice_payments.retrieve(payment.id).id == payment.id
    by_intent = client.v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": intent.id}}
    )
    assert [p.id for p in by_intent.data] == [payment.id]
    assert (
        client.v1.invoice_payments.list(params={"invoice": invoice.id, "status": "open"}).data == []
    )
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.invoice_payments.retrieve("inpay_missing")
    assert err.value.http_status == 404


def test_void_cancels_and_out_of_band_records_payments(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    voided = _invoice(client, send_invoice=True)
    [open_payment] = client.v1.invoice_payments.list(params={"invoice": voided.id}).data
    assert (open_payment.status, open_payment.amount_paid) == ("open", None)
    client.v1.invoices.void_invoice(voided.id)
    canceled = client.v1.invoice_payments.retrieve(open_payment.id)
    assert canceled.status == "canceled"
    assert canceled.status_transitions.canceled_at is not None
    intent = client.v1.payment_intents.retrieve(str(canceled.payment.payment_intent))
    assert (intent.status, intent.cancellation_reason) == ("canceled", "void_invoice")

    manual = _invoice(client, send_invoice=True)
    client.v1.invoices.pay(manual.id, params={"paid_out_of_band": True})
    payments = client.v1.invoice_payments.list(params={"invoice": manual.id}).data
    by_type = {p.payment.type: p for p in payments}
    assert by_type["payment_intent"].status == "canceled"
    record = by_type["payment_record"]
    assert (record.status, record.amount_paid, record.is_default) == ("paid", 700, False)
    assert str(record.payment.payment_record).startswith("pr_")


def test_nothing_to_collect_means_no_payment(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 700,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Trial"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 5}
    )
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice), params={"expand": ["payments"]})
    assert (invoice.status, invoice.total) == ("paid", 0)
    assert invoice.payments.data == []
