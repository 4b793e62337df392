"""Stripe's errors as the typed RPC errors portal-web shows (the mapping alone; the
end-to-end cases are in the other test_rpc_* files)."""

from __future__ import annotations

import pytest
import stripe

from billfold.rpc import RpcNotFound, RpcStripeError, RpcUnavailable
from billing_sync.rpc.errors import GENERIC_REQUEST, to_rpc_error

INTERNAL = "No such price: 'price_internal_42' on account acct_secret (req_x)"


@pytest.mark.parametrize(
    "error",
    [
        stripe.APIConnectionError("connection refused"),
        stripe.APIError(INTERNAL, http_status=500),
        stripe.RateLimitError(INTERNAL, http_status=429),
        stripe.InvalidRequestError(INTERNAL, None, http_status=503),
        stripe.AuthenticationError(INTERNAL, http_status=401),
        stripe.PermissionError(INTERNAL, http_status=403),
    ],
)
def test_outages_and_credentials_are_unavailable(error: stripe.StripeError) -> None:
    mapped = to_rpc_error(error)
    assert isinstance(mapped, RpcUnavailable)
    assert mapped.code == "stripe_unavailable"
    assert "acct_secret" not in mapped.message


def test_an_invalid_request_never_passes_stripes_text_on() -> None:
    mapped = to_rpc_error(
        stripe.InvalidRequestError(INTERNAL, "items[0][price]", code="parameter_invalid")
    )
    assert isinstance(mapped, RpcStripeError)
    assert mapped.code == "parameter_invalid"
    assert mapped.message == GENERIC_REQUEST
    assert mapped.body.param is None


def test_a_missing_object_is_not_found() -> None:
    mapped = to_rpc_error(stripe.InvalidRequestError(INTERNAL, "id", code="resource_missing"))
    assert isinstance(mapped, RpcNotFound)


def test_a_decline_keeps_its_codes_and_gets_our_message() -> None:
    error = stripe.CardError(
        INTERNAL,
        None,
        "card_declined",
        json_body={"error": {"code": "card_declined", "decline_code": "insufficient_funds"}},
    )
    mapped = to_rpc_error(error, hosted_invoice_url="https://invoice.example/i/1")
    assert isinstance(mapped, RpcStripeError)
    assert (mapped.code, mapped.body.decline_code) == ("card_declined", "insufficient_funds")
    assert mapped.message == "Your card has insufficient funds."
    assert mapped.hosted_invoice_url == "https://invoice.example/i/1"
