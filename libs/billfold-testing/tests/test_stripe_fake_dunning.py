"""Smart Retries: a failed renewal is retried on the configured schedule, driven by the fake
clock, and the subscription ends as the dunning policy says once every retry failed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup

DAY = 86_400
HOUR = 3_600


def _failing_renewal(
    stripe_fake: StripeFake, client: stripe.StripeClient
) -> tuple[stripe.Subscription, stripe.Invoice]:
    """An active subscription whose first renewal has just failed (its customer's default
    card now declines every charge)."""
    customer = client.v1.customers.create(params={"email": "dunning@example.com"})
    visa = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": visa.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1200,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Dunning"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert sub.status == "active"
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": failing.id}}
    )
    period_end = sub["items"].data[0].current_period_end
    stripe_fake.advance(period_end - stripe_fake.now() + HOUR)  # renewal finalizes an hour in
    sub = client.v1.subscriptions.retrieve(sub.id)
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.billing_reason == "subscription_cycle"
    return sub, invoice


def _failures(stripe_fake: StripeFake, invoice_id: str) -> int:
    return stripe_fake.call(
        lambda: sum(
            1
            for e in stripe_fake.state.table("event").values()
            if e["type"] == "invoice.payment_failed" and e["data"]["object"]["id"] == invoice_id
        )
    )


def test_retries_on_schedule_then_cancels(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    client = stripe_client
    sub, invoice = _failing_renewal(stripe_fake, client)
    failed_at = invoice.status_transitions.finalized_at
    assert failed_at is not None
    assert sub.status == "past_due"
    assert (invoice.status, invoice.attempt_count) == ("open", 1)
    assert invoice.next_payment_attempt == failed_at + 3 * DAY

    expected_at = failed_at
    for attempt, wait in ((2, 3), (3, 5), (4, 7)):
        expected_at += wait * DAY
        # Just before the retry is due nothing happens ...
        stripe_fake.advance(expected_at - stripe_fake.now() - 60)
        before = client.v1.invoices.retrieve(invoice.id)
        assert before.attempt_count == attempt - 1
        # ... and at the due moment the retry runs and fails again.
        stripe_fake.advance(60)
        after = client.v1.invoices.retrieve(invoice.id)
        assert after.attempt_count == attempt
        assert _failures(stripe_fake, invoice.id) == attempt
        if attempt < 4:
            assert after.next_payment_attempt == expected_at + (5 if attempt == 2 else 7) * DAY
            assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"

    final = client.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]})
    assert (final.status, final.next_payment_attempt) == ("open", None)
    assert final.payments.data[0].status == "open"
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled"
    assert ended.cancellation_details is not None
    assert ended.cancellation_details.reason == "payment_failed"
    assert ended.ended_at == expected_at
    # No more attempts once the schedule is used up.
    stripe_fake.advance(30 * DAY)
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 4

    stripe_fake.drain()
    seen = [
        r.json["type"]
        for r in stripe_webhook.receiver.received
        if r.json["type"] in ("invoice.payment_failed", "customer.subscription.deleted")
        or (
            r.json["type"] == "customer.subscription.updated"
            and "status" in (r.json["data"].get("previous_attributes") or {})
        )
    ]
    assert seen[-6:] == [
        "invoice.payment_failed",
        "customer.subscription.updated",  # active -> past_due
        "invoice.payment_failed",
        "invoice.payment_failed",
        "invoice.payment_failed",
        "customer.subscription.deleted",
    ]


def test_unpaid_after_retries_then_paid(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    stripe_fake.set_dunning(retry_days=(1, 2), after_retries="unpaid")
    sub, invoice = _failing_renewal(stripe_fake, client)
    assert invoice.next_payment_attempt is not None
    stripe_fake.advance(3 * DAY)
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.attempt_count, after.next_payment_attempt, after.status) == (3, None, "open")
    assert client.v1.subscriptions.retrieve(sub.id).status == "unpaid"
    updates = [
        e
        for e in client.v1.events.list(
            params={"type": "customer.subscription.updated", "limit": 1}
        ).data
    ]
    assert updates[0].data.object["status"] == "unpaid"
    assert updates[0].data.previous_attributes["status"] == "past_due"  # type: ignore[index]

    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    assert (paid.status, paid.attempt_count) == ("paid", 3)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_a_retry_succeeds_once_the_card_is_fixed(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    sub, invoice = _failing_renewal(stripe_fake, client)
    fixed = client.v1.payment_methods.attach(
        "pm_card_mastercard", params={"customer": str(sub.customer)}
    )
    client.v1.customers.update(
        str(sub.customer), params={"invoice_settings": {"default_payment_method": fixed.id}}
    )
    stripe_fake.advance(3 * DAY)
    paid = client.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]})
    assert (paid.status, paid.attempt_count, paid.next_payment_attempt) == ("paid", 2, None)
    [payment] = paid.payments.data
    assert (payment.status, payment.amount_paid) == ("paid", 1200)
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert (intent.status, intent.payment_method) == ("succeeded", fixed.id)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    stripe_fake.advance(20 * DAY)
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 2


def test_first_invoice_of_an_incomplete_subscription_is_not_retried(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    pm = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Incomplete"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_payment_method": pm.id,
        }
    )
    assert sub.status == "incomplete"
    stripe_fake.advance(10 * DAY)
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.attempt_count, invoice.next_payment_attempt) == (1, None)


def test_dunning_is_configurable_over_http(stripe_fake: StripeFake) -> None:
    url = stripe_fake.base_url + "/_fake/billing/dunning"
    body = json.dumps({"retry_days": "2,4", "after_retries": "past_due"}).encode()
    request = urllib.request.Request(  # noqa: S310 (loopback test server)
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert json.loads(response.read()) == {"retry_days": [2, 4], "after_retries": "past_due"}
    assert stripe_fake.call(lambda: stripe_fake.state.dunning.retry_days) == (2, 4)
    bad = urllib.request.Request(  # noqa: S310 (loopback test server)
        url, data=b"after_retries=sometimes", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)  # noqa: S310
    assert err.value.code == 400


def test_auto_advance_off_stops_retries(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    sub, invoice = _failing_renewal(stripe_fake, stripe_client)
    assert invoice.next_payment_attempt is not None
    stopped = stripe_client.v1.invoices.update(invoice.id, params={"auto_advance": False})
    assert stopped.next_payment_attempt is None
    stripe_fake.advance(20 * DAY)
    after = stripe_client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempt_count) == ("open", 1)
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "past_due"


def test_command_line_refuses_a_bad_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    from billfold_testing.stripe_fake.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--retry-days", "3,0"])
    assert exit_info.value.code == 2
    assert "--retry-days" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--after-retries", "sometimes"])
