"""Checkout Sessions in setup mode, the hosted page, and SetupIntents."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake, WebhookSetup


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _submit(url: str, **fields: str) -> tuple[int, str, str]:
    """POST the hosted form like a browser; returns (status, Location, body)."""
    opener = urllib.request.build_opener(_NoRedirect)
    data = urllib.parse.urlencode(fields).encode()
    try:
        request = urllib.request.Request(url, data=data)  # noqa: S310 (loopback test server)
        with opener.open(request, timeout=10) as resp:
            return resp.status, "", resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:  # an HTTPError holds the open response
            return err.code, err.headers.get("Location", ""), err.read().decode()


def test_setup_mode_checkout_attaches_a_card(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient, stripe_webhook: WebhookSetup
) -> None:
    client = stripe_client
    customer = client.v1.customers.create(params={"email": "checkout@example.com"})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "customer": customer.id,
            "currency": "eur",
            "success_url": "https://billfold.test/done?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://billfold.test/cancel",
            "metadata": {"tenant": "t1"},
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.status == "open"
    assert session.url.startswith(stripe_fake.base_url + "/checkout/")
    assert session.setup_intent.startswith("seti_")

    with urllib.request.urlopen(session.url, timeout=10) as page:  # noqa: S310
        assert "<form" in page.read().decode()

    status, _loc, body = _submit(session.url, cardnumber="4000 0000 0000 0002", expiry="12 / 34")
    assert status == 402
    assert "Your card was declined." in body
    status, location, _ = _submit(
        session.url, cardnumber="5555 5555 5555 4444", expiry="04 / 31", name="Ada"
    )
    assert status == 303
    assert location == f"https://billfold.test/done?session={session.id}"

    done = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["setup_intent"]})
    assert done.status == "complete"
    intent = done.setup_intent
    assert intent.status == "succeeded"
    pm = client.v1.payment_methods.retrieve(str(intent.payment_method))
    assert (pm.customer, pm.card.brand, pm.card.last4, pm.card.exp_year) == (
        customer.id,
        "mastercard",
        "4444",
        2031,
    )
    assert _submit(session.url, cardnumber="4242424242424242", expiry="1/30")[0] == 409

    stripe_fake.drain()
    types = [r.json["type"] for r in stripe_webhook.receiver.received]
    tail = types[types.index("setup_intent.setup_failed") + 1 :]
    assert tail == [
        "payment_method.attached",
        "setup_intent.succeeded",
        "checkout.session.completed",
    ]
    completed = stripe_webhook.receiver.received[-1]
    event = stripe.Webhook.construct_event(
        completed.body, completed.headers["Stripe-Signature"], stripe_webhook.secret
    )
    assert event.data.object.id == session.id
    assert event.data.object.metadata.tenant == "t1"


def test_session_expiry_and_unsupported_modes(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    session = client.v1.checkout.sessions.create(
        params={"mode": "setup", "success_url": "https://x.test/ok", "currency": "usd"}
    )
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    assert expired.url is None
    listed = client.v1.checkout.sessions.list(params={"status": "expired"})
    assert [s.id for s in listed.data] == [session.id]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={"mode": "payment", "success_url": "https://x.test/ok"}
        )
    assert err.value.param == "mode"


def test_setup_intents_api(stripe_fake: StripeFake, stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create()
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    assert intent.status == "requires_payment_method"
    assert intent.client_secret.startswith(intent.id + "_secret_")
    with pytest.raises(stripe.CardError) as err:
        client.v1.setup_intents.confirm(
            intent.id, params={"payment_method": "pm_card_chargeDeclined"}
        )
    assert err.value.code == "card_declined"
    failed = client.v1.setup_intents.retrieve(intent.id)
    assert failed.last_setup_error.decline_code == "generic_decline"
    ok = client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert ok.status == "succeeded"
    assert client.v1.payment_methods.retrieve(str(ok.payment_method)).customer == customer.id
    other = client.v1.setup_intents.create(
        params={"customer": customer.id, "payment_method": "pm_card_amex", "confirm": True}
    )
    assert other.status == "succeeded"
    cancelable = client.v1.setup_intents.create()
    assert client.v1.setup_intents.cancel(cancelable.id).status == "canceled"
    listed = client.v1.setup_intents.list(params={"customer": customer.id})
    assert [s.id for s in listed.data] == [other.id, intent.id]
    assert [t for t in stripe_fake.event_types() if t.startswith("setup_intent.")] == [
        "setup_intent.created",
        "setup_intent.setup_failed",
        "setup_intent.succeeded",
        "setup_intent.created",
        "setup_intent.succeeded",
        "setup_intent.created",
        "setup_intent.canceled",
    ]
