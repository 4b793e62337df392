"""``POST /v1/invoices/{id}/pay`` as the portal's "pay" button uses it: a card that needs 3-D
Secure stops with Stripe's ``invoice_payment_intent_requires_action`` (so the caller hands
over to ``hosted_invoice_url``), a declined card with ``card_declined``; both leave the
invoice open. Driven through the real ``stripe`` client."""

from __future__ import annotations

import re
import urllib.request

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake

Card = str


def _open_invoice(client: stripe.StripeClient, card: Card | None) -> tuple[str, stripe.Invoice]:
    """A customer (default card ``card``) with an open send_invoice invoice of 2500."""
    customer = client.v1.customers.create(params={"email": "pay@example.com"})
    if card is not None:
        if card.startswith("tok_"):
            pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": card}})
            pm = client.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
        else:
            pm = client.v1.payment_methods.attach(card, params={"customer": customer.id})
        client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
        )
    price = client.v1.prices.create(
        params={
            "currency": "eur",
            "unit_amount": 2500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pay"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "collection_method": "send_invoice",
            "days_until_due": 7,
        }
    )
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.status, invoice.attempt_count, invoice.amount_due) == ("open", 0, 2500)
    return customer.id, invoice


@pytest.mark.parametrize("card", ["pm_card_authenticationRequired", "tok_authenticationRequired"])
def test_pay_with_a_card_needing_authentication(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, card: Card
) -> None:
    client = stripe_client
    customer_id, invoice = _open_invoice(client, card)
    with pytest.raises(stripe.CardError) as err:
        client.v1.invoices.pay(invoice.id)
    assert err.value.http_status == 402
    assert err.value.code == "invoice_payment_intent_requires_action"
    assert err.value.error is not None
    assert err.value.error.type == "card_error"

    after = client.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]})
    assert (after.status, after.attempted, after.attempt_count) == ("open", True, 1)
    assert (after.amount_paid, after.amount_remaining) == (0, 2500)
    assert after.hosted_invoice_url is not None
    [payment] = after.payments.data
    assert (payment.status, payment.is_default, payment.amount_paid) == ("open", True, None)
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert intent.status == "requires_action"
    assert intent.next_action is not None
    assert intent.next_action.type == "use_stripe_sdk"
    assert (intent.amount, intent.currency, intent.customer) == (2500, "eur", customer_id)
    assert err.value.error.payment_intent is not None
    assert err.value.error.payment_intent.id == intent.id
    types = stripe_fake.event_types()
    assert types[-2:] == ["invoice.payment_failed", "invoice.payment_action_required"]

    # The caller hands over to the hosted page, where the customer passes the challenge.
    with urllib.request.urlopen(str(after.hosted_invoice_url), timeout=10) as page:  # noqa: S310
        html = page.read().decode()
    action = re.search(r'<form method="post" action="([^"]+)"', html)
    assert action is not None
    request = urllib.request.Request(  # noqa: S310 (loopback test server)
        stripe_fake.base_url + action.group(1), data=b"", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as done:  # noqa: S310
        assert done.status == 200  # followed the 303 back to the invoice page
        assert "Status: paid" in done.read().decode()
    paid = client.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 2500, 0)
    assert paid.payments.data[0].status == "paid"
    assert paid.payments.data[0].amount_paid == 2500
    assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_pay_with_a_declined_card(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    _customer_id, invoice = _open_invoice(client, None)
    with pytest.raises(stripe.CardError) as err:
        client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_chargeDeclined"})
    assert err.value.http_status == 402
    assert err.value.code == "card_declined"
    assert err.value.error is not None
    assert err.value.error.decline_code == "generic_decline"
    assert err.value.error.payment_method is not None
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempted, after.attempt_count) == ("open", True, 1)
    assert after.amount_remaining == 2500
    assert after.next_payment_attempt is None  # send_invoice: no automatic retries
    [payment] = client.v1.invoice_payments.list(params={"invoice": invoice.id}).data
    assert payment.status == "open"
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == "card_declined"
    assert intent.last_payment_error.payment_method is not None
    assert stripe_fake.event_types()[-1] == "invoice.payment_failed"

    # Stripe: manual attempts after the first don't count towards the retry schedule.
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_chargeDeclined"})
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 1
    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    assert (paid.status, paid.amount_paid, paid.attempt_count) == ("paid", 2500, 1)


def test_pay_with_a_default_card_that_fails_every_charge(
    stripe_client: stripe.StripeClient,
) -> None:
    _customer_id, invoice = _open_invoice(stripe_client, "pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError) as err:
        stripe_client.v1.invoices.pay(invoice.id)
    assert err.value.code == "card_declined"
    after = stripe_client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempt_count) == ("open", 1)


def test_setup_intent_errors_name_the_payment_method(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    with pytest.raises(stripe.CardError) as err:
        client.v1.setup_intents.confirm(
            intent.id, params={"payment_method": "pm_card_chargeDeclined"}
        )
    assert err.value.error is not None
    assert err.value.error.payment_method is not None
    assert err.value.error.payment_method.card.last4 == "0002"  # type: ignore[union-attr]
    failed = client.v1.setup_intents.retrieve(intent.id)
    error = failed.last_setup_error
    assert error is not None
    assert error.payment_method is not None
    assert error.payment_method.id == err.value.error.payment_method.id
    assert (error.payment_method_type, error.code) == ("card", "card_declined")
    assert error.doc_url is not None

    # A card needing 3-D Secure stops at requires_action instead of being saved.
    auth = client.v1.setup_intents.create(
        params={
            "customer": customer.id,
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    assert auth.status == "requires_action"
    assert auth.next_action is not None
    assert client.v1.payment_methods.retrieve(str(auth.payment_method)).customer is None
