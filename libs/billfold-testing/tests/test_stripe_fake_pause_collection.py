"""``pause_collection``: payment collection paused on an active subscription (Stripe's
other "pause", beside the ``paused`` status of a trial that ended without a card)."""

from __future__ import annotations

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake

DAY = 86_400


def _subscribed(client: stripe.StripeClient) -> stripe.Subscription:
    customer = client.v1.customers.create(params={"email": "pause@example.com"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        }
    )
    return client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )


@pytest.mark.parametrize(
    ("behavior", "renewal"),
    [("mark_uncollectible", "uncollectible"), ("void", "void"), ("keep_as_draft", "draft")],
)
def test_paused_collection_bills_nothing_until_resumed(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, behavior: str, renewal: str
) -> None:
    client = stripe_client
    sub = _subscribed(client)
    assert sub.pause_collection is None
    paused = client.v1.subscriptions.update(
        sub.id,
        params={"pause_collection": {"behavior": behavior}},  # type: ignore[typeddict-item]
    )
    assert paused.status == "active"  # not the `paused` status
    assert paused.pause_collection is not None
    assert paused.pause_collection.behavior == behavior
    assert paused.pause_collection.resumes_at is None
    [event] = client.v1.events.list(params={"limit": 1}).data
    assert event.type == "customer.subscription.updated"
    assert event.data.to_dict()["previous_attributes"] == {"pause_collection": None}

    # The renewal's invoice is made, and handled as the behavior says: nothing charged.
    stripe_fake.advance(32 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    renewed = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert renewed.billing_reason == "subscription_cycle"
    assert renewed.status == renewal
    assert renewed.amount_paid == 0
    types = stripe_fake.event_types()
    assert "customer.subscription.paused" not in types  # only for the `paused` status

    # Resumed by clearing it: the next renewal is charged again.
    resumed = client.v1.subscriptions.update(sub.id, params={"pause_collection": ""})
    assert resumed.pause_collection is None
    stripe_fake.advance(32 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert client.v1.invoices.retrieve(str(sub.latest_invoice)).status == "paid"
    assert "customer.subscription.resumed" not in stripe_fake.event_types()


def test_collection_resumes_by_itself_at_resumes_at(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    sub = _subscribed(client)
    at = stripe_fake.now() + 10 * DAY
    paused = client.v1.subscriptions.update(
        sub.id, params={"pause_collection": {"behavior": "void", "resumes_at": at}}
    )
    assert paused.pause_collection is not None
    assert paused.pause_collection.resumes_at == at
    stripe_fake.advance(11 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).pause_collection is None
    stripe_fake.advance(21 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert client.v1.invoices.retrieve(str(sub.latest_invoice)).status == "paid"


def test_bad_pause_collection_is_refused(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    sub = _subscribed(client)
    bad = [
        ({"behavior": "nap"}, "pause_collection[behavior]"),
        ({"resumes_at": stripe_fake.now() + DAY}, "pause_collection[behavior]"),
        (
            {"behavior": "void", "resumes_at": stripe_fake.now() - DAY},
            "pause_collection[resumes_at]",
        ),
    ]
    for value, param in bad:
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.subscriptions.update(
                sub.id,
                params={"pause_collection": value},  # type: ignore[typeddict-item]
            )
        assert err.value.param == param
    assert client.v1.subscriptions.retrieve(sub.id).pause_collection is None
