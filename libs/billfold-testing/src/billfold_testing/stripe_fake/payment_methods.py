"""Card PaymentMethods from Stripe's test numbers and ``pm_card_*`` / ``tok_*`` test ids.

Like Stripe, a test id such as ``pm_card_visa`` is a recipe: every use mints a new
``pm_…`` object. Cards that Stripe's docs say decline do so here: the generic and
insufficient-funds declines fail when attached (Stripe validates the card then);
``pm_card_chargeCustomerFail`` (4000000000000341) attaches but every charge fails;
``pm_card_authenticationRequired`` (4000002760003184) attaches, but every payment needs 3-D
Secure, so it stops at ``requires_action``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from stripe.params import (
    CustomerPaymentMethodListParams,
    CustomerPaymentMethodRetrieveParams,
    PaymentMethodAttachParams,
    PaymentMethodCreateParams,
    PaymentMethodDetachParams,
    PaymentMethodListParams,
    PaymentMethodRetrieveParams,
    PaymentMethodUpdateParams,
)

from . import shapes
from .errors import StripeError, card_declined, invalid, not_found
from .events import emit, emit_update
from .forms import get_dict, get_int, get_str, merge_metadata, req_str
from .lists import paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState

Json = dict[str, Any]
routes = Routes()


@dataclass(frozen=True)
class CardSpec:
    number: str
    brand: str
    funding: str = "credit"
    country: str = "US"
    decline_code: str | None = None  #: why charges (and maybe attaching) fail
    fails_on_attach: bool = False
    #: 3-D Secure on every payment, even off-session (4000002760003184)
    requires_authentication: bool = False


_DECLINED = "generic_decline"
_NSF = "insufficient_funds"
CARDS = {
    c.number: c
    for c in (
        CardSpec("4242424242424242", "visa"),
        CardSpec("4000056655665556", "visa", "debit"),
        CardSpec("5555555555554444", "mastercard"),
        CardSpec("2223003122003222", "mastercard"),
        CardSpec("378282246310005", "amex"),
        CardSpec("6011111111111117", "discover"),
        CardSpec("3056930009020004", "diners"),
        CardSpec("3566002020360505", "jcb", country="JP"),
        CardSpec("6200000000000005", "unionpay", country="CN"),
        CardSpec("4000002500003155", "visa", country="DE"),
        CardSpec("4000000000000002", "visa", decline_code=_DECLINED, fails_on_attach=True),
        CardSpec("4000000000009995", "visa", decline_code=_NSF, fails_on_attach=True),
        CardSpec("4000000000000341", "visa", decline_code=_DECLINED),
        CardSpec("4000002760003184", "visa", requires_authentication=True),
    )
}
#: ``pm_card_*`` and ``tok_*`` test ids -> card number
ALIASES = {
    "visa": "4242424242424242",
    "visa_debit": "4000056655665556",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "diners": "3056930009020004",
    "jcb": "3566002020360505",
    "unionpay": "6200000000000005",
    "de": "4000002500003155",
    "chargeDeclined": "4000000000000002",
    "visa_chargeDeclined": "4000000000000002",
    "chargeDeclinedInsufficientFunds": "4000000000009995",
    "visa_chargeDeclinedInsufficientFunds": "4000000000009995",
    "chargeCustomerFail": "4000000000000341",
    "authenticationRequired": "4000002760003184",
    "threeDSecure2Required": "4000002760003184",
}
_MESSAGES = {_DECLINED: "Your card was declined.", _NSF: "Your card has insufficient funds."}


def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def card_for_number(number: str, param: str = "card[number]") -> CardSpec:
    number = number.replace(" ", "")
    if not number.isdigit() or not 12 <= len(number) <= 19 or not _luhn_ok(number):
        raise card_declined(
            code="incorrect_number", message="Your card number is incorrect.", param=param
        )
    card = CARDS.get(number)
    if card is None:
        raise card_declined(
            message="Your card was declined. Your request was in test mode, but used a "
            "non test (live) card. For a list of valid test cards, visit: "
            "https://stripe.com/docs/testing.",
            decline_code="live_mode_test_card",
        )
    return card


def _alias(test_id: str) -> str | None:
    for prefix in ("pm_card_", "tok_"):
        if test_id.startswith(prefix) and test_id[len(prefix) :] in ALIASES:
            return ALIASES[test_id[len(prefix) :]]
    return None


def new_card(
    state: FakeState, card: CardSpec, exp_month: int = 12, exp_year: int | None = None
) -> Json:
    pm = shapes.blank("payment_method")
    year = exp_year or 2034
    pm.update(
        id=state.new_id("pm_"),
        created=state.clock.now(),
        type="card",
        allow_redisplay="unspecified",
        _card=card.number,
    )
    pm["card"].update(
        brand=card.brand,
        display_brand=card.brand,
        country=card.country,
        exp_month=exp_month,
        exp_year=year,
        funding=card.funding,
        last4=card.number[-4:],
        # Stable per card number, like Stripe's fingerprint.
        fingerprint=hashlib.sha256(card.number.encode()).hexdigest()[:16],
        networks={"available": [card.brand], "preferred": None},
    )
    return state.add("payment_method", pm)


def resolve(state: FakeState, pm_id: str, param: str = "payment_method") -> Json:
    """An existing PaymentMethod, or a freshly minted one for a test id."""
    number = _alias(pm_id)
    if number is not None:
        return new_card(state, CARDS[number])
    pm = state.find("payment_method", pm_id)
    if pm is None:
        raise not_found("PaymentMethod", pm_id, param)
    return pm


def card_spec(pm: Json) -> CardSpec:
    return CARDS[pm["_card"]]


def card_declined_for(card: CardSpec) -> StripeError:
    code = card.decline_code or _DECLINED
    return card_declined(code, _MESSAGES[code])


def charge_error(pm: Json | None, amount: int, currency: str) -> StripeError | None:
    """The card error a charge of ``amount`` on ``pm`` would end with, if any."""
    if pm is None:
        return invalid(
            "This customer has no attached payment source or default payment method.",
            code="resource_missing",
        )
    card = card_spec(pm)
    return card_declined_for(card) if card.decline_code else None


def needs_authentication(pm: Json) -> bool:
    """Whether charging ``pm`` stops for 3-D Secure (the customer must act)."""
    return card_spec(pm).requires_authentication


def attach(state: FakeState, pm: Json, customer_id: str) -> Json:
    state.get("customer", customer_id, "customer")
    if pm["customer"] == customer_id:
        return pm
    if pm["customer"] is not None or pm.get("_detached"):
        raise invalid(
            "This PaymentMethod was previously used without being attached to a Customer or "
            "was detached from a Customer, and may not be used again.",
            param="payment_method",
        )
    card = card_spec(pm)
    if card.fails_on_attach:
        raise card_declined_for(card)
    pm["customer"] = customer_id
    emit(state, "payment_method.attached", state.render(pm))
    return pm


def require_attached(state: FakeState, pm_id: str, customer_id: str, param: str) -> Json:
    """Stripe insists a default payment method already belongs to the customer."""
    pm = state.find("payment_method", pm_id)
    if pm is None or pm["customer"] != customer_id:
        raise invalid(
            f"The customer does not have a payment method with the ID {pm_id}. The payment "
            "method must be attached to the customer.",
            param=param,
            code="resource_missing",
        )
    return pm


def detach(state: FakeState, pm: Json) -> Json:
    if pm["customer"] is None:
        raise invalid(
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible.",
            code="payment_method_unexpected_state",
        )
    customer = state.find("customer", pm["customer"])
    if customer and customer["invoice_settings"]["default_payment_method"] == pm["id"]:
        before = state.render(customer)
        customer["invoice_settings"]["default_payment_method"] = None
        emit_update(state, "customer.updated", before, state.render(customer))
    previous = {"customer": pm["customer"]}
    pm["customer"] = None
    pm["_detached"] = True
    emit(state, "payment_method.detached", state.render(pm), previous)
    return pm


def create_from_params(state: FakeState, p: Json) -> Json:
    kind = get_str(p, "type") or "card"
    if kind != "card":
        raise invalid(f"The fake supports only card payment methods, not {kind}.", param="type")
    card_params = get_dict(p, "card") or {}
    if token := get_str(card_params, "token"):
        number = _alias(token)
        if number is None:
            raise not_found("token", token, "card[token]")
        pm = new_card(state, CARDS[number])
    else:
        number = req_str(card_params, "number", param="card[number]")
        card = card_for_number(number)
        month = get_int(card_params, "exp_month", param="card[exp_month]")
        year = get_int(card_params, "exp_year", param="card[exp_year]")
        if month is None:
            raise invalid("Missing required param: card[exp_month].", param="card[exp_month]")
        if year is None:
            raise invalid("Missing required param: card[exp_year].", param="card[exp_year]")
        if not 1 <= month <= 12:
            raise card_declined(
                code="invalid_expiry_month",
                message="Your card's expiration month is invalid.",
                param="exp_month",
            )
        if year < 100:
            year += 2000
        pm = new_card(state, card, month, year)
    if (details := get_dict(p, "billing_details")) is not None:
        _billing_details(pm, details)
    pm["metadata"] = merge_metadata({}, p.get("metadata"))
    return pm


def _billing_details(pm: Json, details: Json) -> None:
    target = pm["billing_details"]
    for key in ("email", "name", "phone"):
        if key in details:
            target[key] = get_str(details, key) or None
    if (address := get_dict(details, "address")) is not None:
        target["address"] = {k: address.get(k) or None for k in target["address"]}


@routes.post("/v1/payment_methods", params=Allow(PaymentMethodCreateParams))
def create_payment_method(ctx: Ctx) -> Json:
    pm = create_from_params(ctx.state, ctx.params)
    if customer := get_str(ctx.params, "customer"):
        attach(ctx.state, pm, customer)
    return ctx.state.render(pm)


@routes.get("/v1/payment_methods/{id}", params=Allow(PaymentMethodRetrieveParams))
def retrieve_payment_method(ctx: Ctx) -> Json:
    return ctx.state.render(resolve(ctx.state, ctx.arg("id"), "payment_method"))


@routes.post("/v1/payment_methods/{id}", params=Allow(PaymentMethodUpdateParams))
def update_payment_method(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    pm = resolve(state, ctx.arg("id"), "payment_method")
    before = state.render(pm)
    if (details := get_dict(p, "billing_details")) is not None:
        _billing_details(pm, details)
    if (card := get_dict(p, "card")) is not None:
        for key in ("exp_month", "exp_year"):
            if (value := get_int(card, key, param=f"card[{key}]")) is not None:
                pm["card"][key] = value
    pm["metadata"] = merge_metadata(pm["metadata"], p.get("metadata"))
    after = state.render(pm)
    emit_update(state, "payment_method.updated", before, after)
    return after


@routes.post("/v1/payment_methods/{id}/attach", params=Allow(PaymentMethodAttachParams))
def attach_payment_method(ctx: Ctx) -> Json:
    customer = req_str(ctx.params, "customer")
    pm = resolve(ctx.state, ctx.arg("id"), "payment_method")
    return ctx.state.render(attach(ctx.state, pm, customer))


@routes.post("/v1/payment_methods/{id}/detach", params=Allow(PaymentMethodDetachParams))
def detach_payment_method(ctx: Ctx) -> Json:
    pm = ctx.state.get("payment_method", ctx.arg("id"), "payment_method")
    return ctx.state.render(detach(ctx.state, pm))


def _list_for(ctx: Ctx, customer: str, url: str) -> Json:
    ctx.state.get("customer", customer, "customer")
    kind = get_str(ctx.params, "type")
    # The customer scopes the list (a cursor must be one of theirs); ``type`` only filters it.
    theirs = [pm for pm in ctx.state.newest_first("payment_method") if pm["customer"] == customer]
    rows = [pm for pm in theirs if not kind or pm["type"] == kind]
    return paginate(rows, ctx.params, url, ctx.state.render, "payment_method", unfiltered=theirs)


@routes.get("/v1/payment_methods", params=Allow(PaymentMethodListParams))
def list_payment_methods(ctx: Ctx) -> Json:
    customer = req_str(ctx.params, "customer")
    return _list_for(ctx, customer, "/v1/payment_methods")


@routes.get(
    "/v1/customers/{customer}/payment_methods", params=Allow(CustomerPaymentMethodListParams)
)
def list_customer_payment_methods(ctx: Ctx) -> Json:
    customer = ctx.arg("customer")
    return _list_for(ctx, customer, f"/v1/customers/{customer}/payment_methods")


@routes.get(
    "/v1/customers/{customer}/payment_methods/{id}",
    params=Allow(CustomerPaymentMethodRetrieveParams),
)
def retrieve_customer_payment_method(ctx: Ctx) -> Json:
    pm = ctx.state.get("payment_method", ctx.arg("id"), "payment_method")
    if pm["customer"] != ctx.arg("customer"):
        raise not_found("PaymentMethod", ctx.arg("id"), "payment_method")
    return ctx.state.render(pm)
