"""Webhook endpoints, signed delivery, retries, and the delay/duplicate/reorder switch."""

from __future__ import annotations

import itertools
import time

import pytest
import stripe

from billfold_testing.stripe_fake import sign
from billfold_testing.stripe_fake.fixtures import (
    StripeFake,
    WebhookReceiver,
    WebhookSetup,
    post_control,
)


def _activity(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "hook@example.com"})
    client.v1.customers.update(customer.id, params={"name": "Hook", "metadata": {"k": "v"}})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.payment_methods.detach(pm.id)


def test_every_delivery_verifies_with_construct_event(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    assert stripe_webhook.secret.startswith("whsec_")
    _activity(stripe_client)
    stripe_fake.drain()
    received = stripe_webhook.receiver.received
    assert [r.json["type"] for r in received] == [
        "customer.created",
        "customer.updated",
        "payment_method.attached",
        "payment_method.detached",
    ]
    for r in received:
        assert r.headers["Content-Type"].startswith("application/json")
        event = stripe.Webhook.construct_event(
            r.body, r.headers["Stripe-Signature"], stripe_webhook.secret
        )
        assert event.object == "event"
        assert event.livemode is False
        assert event.api_version == stripe.api_version
        assert event.request.idempotency_key  # the library sends one on every POST
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            received[0].body, received[0].headers["Stripe-Signature"], "whsec_wrong"
        )
    updated = received[1].json
    assert updated["data"]["previous_attributes"] == {"name": None, "metadata": {"k": None}}
    detached = received[3].json["data"]
    assert detached["object"]["customer"] is None
    assert detached["previous_attributes"]["customer"] == received[0].json["data"]["object"]["id"]


def test_signature_format_matches_stripe() -> None:
    header = sign('{"id": "evt_1"}', "whsec_test", timestamp=1700000000)
    assert header.startswith("t=1700000000,v1=")
    event = stripe.Webhook.construct_event(
        '{"id": "evt_1", "object": "event"}',
        sign('{"id": "evt_1", "object": "event"}', "whsec_test"),
        "whsec_test",
    )
    assert event.id == "evt_1"


def test_enabled_events_filter_and_endpoint_api(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    client = stripe_client
    endpoint = client.v1.webhook_endpoints.create(
        params={
            "url": webhook_receiver.url,
            "enabled_events": ["customer.created"],
            "description": "billing-sync",
        }
    )
    assert endpoint.status == "enabled"
    assert endpoint.secret.startswith("whsec_")
    fetched = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert "secret" not in fetched
    assert fetched.enabled_events == ["customer.created"]
    _activity(client)
    stripe_fake.drain()
    assert webhook_receiver.types() == ["customer.created"]
    client.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    client.v1.customers.create()
    stripe_fake.drain()
    assert webhook_receiver.types() == ["customer.created"]
    listed = client.v1.webhook_endpoints.list()
    assert [e.id for e in listed.data] == [endpoint.id]
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    assert client.v1.webhook_endpoints.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.webhook_endpoints.create(params={"url": "ftp://x", "enabled_events": ["*"]})
    assert err.value.param == "url"


def test_failed_deliveries_are_retried_with_backoff(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    stripe_webhook.receiver.fail_next(2, status=503)
    customer = stripe_client.v1.customers.create()
    stripe_fake.drain()
    received = stripe_webhook.receiver.received
    assert [r.json["data"]["object"]["id"] for r in received] == [customer.id]
    attempts = stripe_fake.deliveries()
    assert [(a["attempt"], a["status"], a["ok"]) for a in attempts] == [
        (1, 503, False),
        (2, 503, False),
        (3, 200, True),
    ]
    # Exponential backoff: 20 ms, then 40 ms (TEST_RETRY.backoff doubling).
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.02
    assert gaps[1] >= 0.04
    event = stripe_client.v1.events.retrieve(received[0].json["id"])
    assert event.pending_webhooks == 0


def test_delivery_gives_up_after_the_last_attempt(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    stripe_webhook.receiver.fail_next(10)
    customer = stripe_client.v1.customers.create()
    stripe_fake.drain()
    assert stripe_webhook.receiver.received == []
    assert [a["ok"] for a in stripe_fake.deliveries()] == [False] * 4  # TEST_RETRY.attempts
    event = stripe_client.v1.events.list(params={"type": "customer.created"}).data[0]
    assert event.data.object.id == customer.id
    assert event.pending_webhooks == 1  # never delivered


def test_duplicate_and_reorder_switch(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    post_control(stripe_fake.base_url, "/_fake/webhooks/behaviour", duplicate=True, reorder=True)
    _activity(stripe_client)
    stripe_fake.drain()
    events = [r.json for r in stripe_webhook.receiver.received]
    ids = [e["id"] for e in events]
    assert len(ids) == 8
    assert len(set(ids)) == 4
    emitted = [
        e.id for e in stripe_client.v1.events.list(params={"limit": 100}).auto_paging_iter()
    ][::-1]
    assert list(dict.fromkeys(ids)) != emitted  # order changed ...
    assert sorted(set(ids)) == sorted(emitted)  # ... nothing lost
    for r in stripe_webhook.receiver.received:
        stripe.Webhook.construct_event(r.body, r.headers["Stripe-Signature"], stripe_webhook.secret)


def test_delay_switch(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    stripe_fake.set_delivery(delay=0.3)
    started = time.monotonic()
    stripe_client.v1.customers.create()
    assert stripe_webhook.receiver.received == []
    stripe_webhook.receiver.wait_for(1)
    assert time.monotonic() - started >= 0.3


def test_events_api(stripe_fake: StripeFake, stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    _activity(client)
    events = client.v1.events.list()
    assert [e.type for e in events.data] == [
        "payment_method.detached",
        "payment_method.attached",
        "customer.updated",
        "customer.created",
    ]
    only = client.v1.events.list(params={"types": ["customer.created", "customer.updated"]})
    assert {e.type for e in only.data} == {"customer.created", "customer.updated"}
    wildcard = client.v1.events.list(params={"type": "payment_method.*"})
    assert len(wildcard.data) == 2
    first = client.v1.events.retrieve(events.data[-1].id)
    assert first.type == "customer.created"
    assert first.pending_webhooks == 0
    assert first.created <= stripe_fake.now()


def test_reset_drops_pending_deliveries(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    stripe_webhook.receiver.fail_next(100)
    stripe_client.v1.customers.create()
    stripe_webhook.receiver.fail_next(0)
    stripe_fake.reset()
    stripe_fake.drain(timeout=2)  # raises if anything were still pending
    assert stripe_client.v1.webhook_endpoints.list().data == []
    stripe_client.v1.customers.create()
    stripe_fake.drain(timeout=2)
    assert stripe_webhook.receiver.received == []  # the endpoint went with the reset
