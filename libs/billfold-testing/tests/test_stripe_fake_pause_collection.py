"""Stripe's two pauses: ``pause_collection`` (payment collection paused, the status stays
as it is) and the ``paused`` status (``/pause`` on demand, or a trial that ended without
a card), resumed with ``/resume``."""

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


def test_pause_on_demand_then_resume(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    """``POST /v1/subscriptions/{id}/pause`` (API 2026-09-30.endive on): status ``paused``
    with ``status_details``, no renewals while paused, ``/resume`` bills a new period."""
    client = stripe_client
    sub = _subscribed(client)
    assert sub.status_details is None
    paused = client.v1.subscriptions.pause(sub.id)
    assert paused.status == "paused"
    assert paused.status_details is not None
    details = paused.status_details.paused
    assert (details.type, details.subscription.type) == ("subscription", "pause_requested")
    assert details.transitioned_at == stripe_fake.now()
    events = client.v1.events.list(params={"limit": 2}).data
    assert [e.type for e in events] == [
        "customer.subscription.paused",
        "customer.subscription.updated",
    ]
    assert events[1].data.to_dict()["previous_attributes"] == {
        "status": "active",
        "status_details": None,
    }
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.pause(sub.id)  # already paused

    # No renewal while paused.
    invoices_before = len(client.v1.invoices.list(params={"subscription": sub.id}).data)
    stripe_fake.advance(40 * DAY)
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == invoices_before

    resumed = client.v1.subscriptions.resume(
        sub.id, params={"billing_cycle_anchor": {"type": "now"}}
    )
    assert resumed.status == "active"
    assert resumed.status_details is None
    assert resumed["items"].data[0].current_period_start == stripe_fake.now()
    assert client.v1.invoices.retrieve(str(resumed.latest_invoice)).status == "paid"
    assert "customer.subscription.resumed" in stripe_fake.event_types()


def test_a_trial_ended_without_a_card_says_why_it_paused(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "trial@example.com"})
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Basic"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "trial_period_days": 1,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    stripe_fake.advance(DAY + 60)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "paused"
    assert sub.status_details is not None
    assert sub.status_details.paused.subscription.type == "trial_end_without_payment_method"
