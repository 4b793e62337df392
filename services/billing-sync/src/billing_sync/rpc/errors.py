"""Stripe's errors as typed RPC errors, with messages a customer may read.

Stripe's own ``message`` is written for developers and may name internals (a
PaymentIntent, a parameter path, an account), so it is never passed on: the message
comes from the tables below, by Stripe's ``code`` / ``decline_code``, with a generic one
for anything else. Stripe being unreachable, rate limiting (said as "busy") or failing (5xx) is
``RpcUnavailable``: not stored, so the caller's retry runs the call again (with the
same idempotency keys, so a write that did reach Stripe is not made twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import stripe

from billfold.logs import get_logger
from billfold.rpc import RpcNotFound, RpcStripeError, RpcUnavailable
from billing_sync.stripe_api import NoStripeKey

log = get_logger("billing_sync.rpc")

GENERIC_CARD = "Your card was declined. Please use another card or contact your bank."
GENERIC_REQUEST = "This change could not be made. Please check the details and try again."
BUSY = "Billing is busy right now. Please try again in a moment."
MUST_ACT = "Your bank needs you to confirm this payment. Please continue on the payment page."

_DECLINES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": GENERIC_CARD,
    "stolen_card": GENERIC_CARD,
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Please try again.",
    "incorrect_number": "Your card number is incorrect.",
}
#: Codes meaning the customer must act on Stripe's page (3-D Secure).
ACTION_CODES = frozenset({"authentication_required", "invoice_payment_intent_requires_action"})
_REQUEST_CODES = {
    "tax_id_invalid": "The tax ID is not valid.",
    "email_invalid": "The email address is not valid.",
    "invoice_already_paid": "This invoice is already paid.",
    "invoice_not_editable": "This invoice can no longer be paid.",
    "postal_code_invalid": "The postal code is not valid.",
}


def _action_required(exc: stripe.StripeError) -> bool:
    if exc.code in ACTION_CODES:
        return True
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    return getattr(intent, "status", None) == "requires_action"


def to_rpc_error(
    exc: stripe.StripeError, *, hosted_invoice_url: str | None = None
) -> RpcStripeError | RpcNotFound | RpcUnavailable:
    """The RPC error for a Stripe error (``hosted_invoice_url`` for a payment the
    customer can complete on Stripe's page)."""
    if isinstance(exc, stripe.RateLimitError):
        # Stripe limited the account's requests (the library's retries, if Stripe advised
        # any, are spent): say "busy", which is true and tells the customer what to do.
        log.warning("rpc_stripe_rate_limited", status=exc.http_status)
        return RpcUnavailable(BUSY, code="stripe_unavailable")
    if (
        isinstance(exc, stripe.APIConnectionError | stripe.APIError)
        or (exc.http_status or 0) >= 500
    ):
        log.warning("rpc_stripe_unavailable", error=type(exc).__name__, status=exc.http_status)
        return RpcUnavailable(code="stripe_unavailable")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        # The site's key is wrong or revoked: nothing the customer can fix.
        log.error("rpc_stripe_refused_credentials", error=type(exc).__name__)
        return RpcUnavailable(code="stripe_unavailable")
    code = exc.code or "stripe_error"
    if _action_required(exc):
        return RpcStripeError(
            "authentication_required", MUST_ACT, hosted_invoice_url=hosted_invoice_url
        )
    if isinstance(exc, stripe.CardError):
        decline = getattr(exc.error, "decline_code", None) if exc.error else None
        message = _DECLINES.get(decline or "") or _DECLINES.get(code) or GENERIC_CARD
        return RpcStripeError(
            code, message, decline_code=decline, hosted_invoice_url=hosted_invoice_url
        )
    if isinstance(exc, stripe.InvalidRequestError) and code == "resource_missing":
        # Deleted at Stripe since the mirror saw it: for the caller, it does not exist.
        return RpcNotFound()
    log.info("rpc_stripe_refused", error=type(exc).__name__, code=code)
    return RpcStripeError(code, _REQUEST_CODES.get(code, GENERIC_REQUEST))


@contextmanager
def stripe_errors(*, hosted_invoice_url: str | None = None) -> Iterator[None]:
    """Raise the RPC error for any Stripe error (or a missing key) inside the block."""
    try:
        yield
    except stripe.StripeError as exc:
        raise to_rpc_error(exc, hosted_invoice_url=hosted_invoice_url) from exc
    except NoStripeKey as exc:
        log.error("rpc_site_without_stripe_key")
        raise RpcUnavailable(code="stripe_unavailable") from exc
