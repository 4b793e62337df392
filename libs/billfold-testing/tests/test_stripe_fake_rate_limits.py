"""Stripe's 429s on demand (``/_fake/rate_limit``), as the official library sees them: a
rate limit is a ``RateLimitError`` the library does not retry; a lock timeout carries
``Stripe-Should-Retry: true`` and is retried; a limited write runs once on retry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake, post_control


def test_a_rate_limit_is_stripes_429_and_the_library_does_not_retry_it(
    stripe_fake: StripeFake,
) -> None:
    client = stripe_fake.client(max_network_retries=3)
    stripe_fake.rate_limit(1)
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.customers.create(params={"email": "a@example.com"})
    err = caught.value
    assert err.http_status == 429
    assert err.error is not None  # (the library sets no ``code`` on a RateLimitError)
    assert (err.error.type, err.error.code) == ("invalid_request_error", "rate_limit")
    assert err.headers is not None
    assert "stripe-should-retry" not in err.headers
    assert err.headers.get("request-id", "").startswith("req_")
    assert stripe_fake.rate_limited() == 1  # one request: the library did not retry
    assert client.v1.customers.list().data == []  # the write never ran
    assert stripe_fake.rate_limited() == 1  # armed for one request only


def test_the_raw_429_body(stripe_fake: StripeFake) -> None:
    stripe_fake.rate_limit(1)
    request = urllib.request.Request(  # noqa: S310 - the fake's http:// URL
        stripe_fake.base_url + "/v1/customers",
        headers={"Authorization": f"Bearer {stripe_fake.api_key}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert caught.value.code == 429
    with caught.value:
        body = json.loads(caught.value.read())
    assert set(body["error"]) >= {"type", "code", "message", "doc_url"}
    assert body["error"]["code"] == "rate_limit"
    assert body["error"]["doc_url"] == "https://stripe.com/docs/error-codes/rate-limit"
    assert body["error"]["message"].startswith("Request rate limit exceeded.")


def test_a_lock_timeout_is_retried_by_the_library(stripe_fake: StripeFake) -> None:
    client = stripe_fake.client(max_network_retries=2)
    stripe_fake.rate_limit(2, kind="lock_timeout")
    customer = client.v1.customers.create(
        params={"email": "b@example.com"}, options={"idempotency_key": "lock-1"}
    )
    assert stripe_fake.rate_limited() == 2
    assert [c.id for c in client.v1.customers.list().data] == [customer.id]  # written once


def test_a_limited_write_is_not_stored_under_its_idempotency_key(
    stripe_fake: StripeFake,
) -> None:
    client = stripe_fake.client()
    stripe_fake.rate_limit(1)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.create(
            params={"email": "c@example.com"}, options={"idempotency_key": "idem-429"}
        )
    created = client.v1.customers.create(
        params={"email": "c@example.com"}, options={"idempotency_key": "idem-429"}
    )
    assert created.email == "c@example.com"
    assert len(client.v1.customers.list().data) == 1


def test_a_limit_can_apply_to_one_account_only(stripe_fake: StripeFake) -> None:
    limited = "sk_test_limited_account_0001"
    stripe_fake.rate_limit(5, api_key=limited)
    assert stripe_fake.client().v1.customers.list().data == []  # another key: not limited
    with pytest.raises(stripe.RateLimitError):
        stripe_fake.client(api_key=limited).v1.customers.list()
    shown = post_control(stripe_fake.base_url, "/_fake/rate_limit", requests=0)
    assert shown == {"remaining": 0, "kind": "rate_limit", "one_key": False, "limited": 1}


def test_the_control_refuses_bad_input(stripe_fake: StripeFake) -> None:
    for params in ({"requests": "x"}, {"requests": 1, "kind": "nope"}, {}):
        with pytest.raises(urllib.error.HTTPError) as caught:
            post_control(stripe_fake.base_url, "/_fake/rate_limit", **params)
        assert caught.value.code == 400
        caught.value.close()
