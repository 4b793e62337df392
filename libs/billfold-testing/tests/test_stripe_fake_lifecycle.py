"""A subscription's whole life driven by the fake clock, observed through signed webhooks."""

from __future__ import annotations

import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup

DAY = 86_400
SETUP_EVENTS = {
    "customer.created",
    "customer.updated",
    "payment_method.attached",
    "product.created",
    "price.created",
}


def _customer_with_card(client: stripe.StripeClient) -> stripe.Customer:
    customer = client.v1.customers.create(params={"email": "life@example.com", "name": "Life"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    return client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )


def test_trial_renewal_cancel_at_period_end(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    client = stripe_client
    customer = _customer_with_card(client)
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Billfold Pro"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 7}
    )
    item = sub["items"].data[0]
    assert sub.status == "trialing"
    assert sub.trial_end == sub.trial_start + 7 * DAY
    assert (item.current_period_start, item.current_period_end) == (sub.trial_start, sub.trial_end)
    first = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (first.status, first.total, first.billing_reason) == ("paid", 0, "subscription_create")
    assert first.lines.data[0].description == "Trial period for Billfold Pro"

    # Trial ends: the subscription turns active and a draft renewal invoice appears.
    stripe_fake.advance(7 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    item = sub["items"].data[0]
    assert sub.status == "active"
    assert item.current_period_start == sub.trial_end
    draft = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert draft.status == "draft"
    assert draft.hosted_invoice_url is None
    assert draft.number is None
    assert draft.automatically_finalizes_at == item.current_period_start + 3600
    assert draft.parent.subscription_details.subscription == sub.id

    # About an hour later Stripe finalizes and charges it.
    stripe_fake.advance(3600)
    paid = client.v1.invoices.retrieve(draft.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 1500, 0)
    assert paid.number is not None
    assert paid.number.endswith("-0002")

    # A month on: renewal invoice for the next period.
    period_end = item.current_period_end
    stripe_fake.advance(period_end - stripe_fake.now() + 3600)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub["items"].data[0].current_period_start == period_end
    renewal = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (renewal.status, renewal.total) == ("paid", 1500)
    assert renewal.lines.data[0].period.start == period_end

    # Cancel at period end, then let the period run out.
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    end = sub["items"].data[0].current_period_end
    assert sub.cancel_at_period_end is True
    assert sub.cancel_at == end
    assert sub.status == "active"
    stripe_fake.advance(end - stripe_fake.now() + 5 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled"
    assert sub.ended_at == end
    assert sub.cancellation_details.reason == "cancellation_requested"
    invoices = client.v1.invoices.list(params={"subscription": sub.id})
    assert len(invoices.data) == 3  # no invoice after cancellation

    expected = [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.trial_will_end",
        "customer.subscription.updated",  # trialing -> active
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",  # renewal
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",  # cancel_at_period_end
        "customer.subscription.deleted",
    ]
    assert [t for t in stripe_fake.event_types() if t not in SETUP_EVENTS] == expected

    stripe_fake.drain()
    received = stripe_webhook.receiver.received
    events = [
        stripe.Webhook.construct_event(r.body, r.headers["Stripe-Signature"], stripe_webhook.secret)
        for r in received
    ]
    assert [e.type for e in events if e.type not in SETUP_EVENTS] == expected
    created = [e.created for e in events]
    assert created == sorted(created)  # the clock was pinned to each transition

    by_type = {e.type: e for e in events}
    trial_end_update = next(
        e
        for e in events
        if e.type == "customer.subscription.updated"
        and e.to_dict()["data"].get("previous_attributes", {}).get("status") == "trialing"
    )
    assert trial_end_update.data.object.status == "active"
    deleted = by_type["customer.subscription.deleted"]
    assert deleted.data.object.status == "canceled"
    cancel_update = [e for e in events if e.type == "customer.subscription.updated"][-1]
    assert cancel_update.data.previous_attributes.cancel_at_period_end is False
    assert cancel_update.data.previous_attributes.cancel_at is None
    # Background transitions carry no API request; API calls carry theirs.
    assert by_type["customer.subscription.deleted"].request.id is None
    assert by_type["customer.subscription.created"].request.id.startswith("req_")


def test_trial_without_card_pauses_and_resume_restarts_billing(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "pause@example.com"})
    price = client.v1.prices.create(
        params={
            "currency": "eur",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Basic"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "trial_period_days": 3,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    stripe_fake.advance(3 * DAY + 60)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "paused"
    paused_list = client.v1.subscriptions.list(params={"status": "paused"})
    assert [s.id for s in paused_list.data] == [sub.id]

    pm = client.v1.payment_methods.attach("pm_card_mastercard", params={"customer": customer.id})
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": pm.id})
    before = stripe_fake.now()
    resumed = client.v1.subscriptions.resume(sub.id)
    assert resumed.status == "active"
    assert before <= resumed["items"].data[0].current_period_start <= stripe_fake.now()
    invoice = client.v1.invoices.retrieve(str(resumed.latest_invoice))
    assert (invoice.status, invoice.total, invoice.currency) == ("paid", 900, "eur")
    types = stripe_fake.event_types()
    assert "customer.subscription.paused" in types
    assert types.index("customer.subscription.resumed") > types.index(
        "customer.subscription.paused"
    )

    with_error = None
    try:
        client.v1.subscriptions.resume(sub.id)
    except stripe.InvalidRequestError as exc:
        with_error = exc
    assert with_error is not None
    assert with_error.http_status == 400


def test_failed_renewal_makes_subscription_past_due_and_paying_recovers(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "fail@example.com"})
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    sub_price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "week", "interval_count": 2},
            "product_data": {"name": "Biweekly"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": sub_price.id}],
            "default_payment_method": good.id,
        }
    )
    assert sub.status == "active"
    item = sub["items"].data[0]
    assert item.current_period_end - item.current_period_start == 14 * DAY

    bad = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": bad.id})
    stripe_fake.advance(14 * DAY + 3600)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.status, invoice.attempt_count, invoice.attempted) == ("open", 1, True)
    assert "invoice.payment_failed" in stripe_fake.event_types()

    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": good.id})
    assert paid.status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
