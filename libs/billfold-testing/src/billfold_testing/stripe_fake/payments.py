"""Invoice payments and the PaymentIntents behind them (read-only, as invoices drive them).

As on Stripe, finalizing an invoice with something to collect creates its *default* payment:
a PaymentIntent and an ``invoice_payment`` (``payment.type = "payment_intent"``) in status
``open``. Each attempt to charge it updates both: a success makes the payment ``paid`` and the
intent ``succeeded``; a decline leaves the payment ``open`` and the intent
``requires_payment_method`` with ``last_payment_error``; a card that needs authentication
leaves the intent ``requires_action``. Voiding cancels open payments; paying out of band
cancels the default payment and records a ``payment_record`` payment. ``invoice.payments`` is
includable (``expand[]=payments``), and ``/v1/invoice_payments`` lists and retrieves them.

No money moves: there are no Charges (``latest_charge`` names one that can't be fetched) and
PaymentIntents can only be retrieved, not created, confirmed or listed.
"""

from __future__ import annotations

from typing import Any

from stripe.params import (
    InvoicePaymentListParams,
    InvoicePaymentRetrieveParams,
    PaymentIntentRetrieveParams,
)

from . import shapes
from .errors import StripeError, error_object, invalid
from .expand import INCLUDABLE
from .forms import get_dict, get_str
from .lists import created_filter, list_object, paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState, random_token

Json = dict[str, Any]
routes = Routes()
_DESCRIPTIONS = {
    "subscription_create": "Subscription creation",
    "subscription_cycle": "Subscription update",
    "subscription_update": "Subscription update",
}


def payments_of(state: FakeState, invoice_id: str) -> list[Json]:
    return [p for p in state.newest_first("invoice_payment") if p["invoice"] == invoice_id]


def _include_payments(state: FakeState, node: Json) -> Any:
    invoice_id = str(node.get("id"))
    rows = [state.render(p) for p in payments_of(state, invoice_id)]
    return list_object(rows, f"/v1/invoice_payments?invoice={invoice_id}")


INCLUDABLE[("invoice", "payments")] = _include_payments


def _new_payment(state: FakeState, inv: Json, payment: Json, *, default: bool) -> Json:
    record = shapes.blank("invoice_payment")
    record.update(
        id=state.new_id("inpay_"),
        created=state.clock.now(),
        currency=inv["currency"],
        invoice=inv["id"],
        is_default=default,
        amount_requested=int(inv["amount_remaining"]),
        payment=payment,
    )
    return state.add("invoice_payment", record)


def open_default(state: FakeState, inv: Json) -> None:
    """At finalization: the invoice's PaymentIntent and default (open) payment."""
    if int(inv["amount_due"]) <= 0:
        return
    intent = shapes.blank("payment_intent")
    pi_id = state.new_id("pi_")
    intent.update(
        id=pi_id,
        created=state.clock.now(),
        amount=int(inv["amount_due"]),
        currency=inv["currency"],
        customer=inv["customer"],
        client_secret=f"{pi_id}_secret_{random_token(24)}",
        description=_DESCRIPTIONS.get(str(inv["billing_reason"]), "Invoice payment"),
        setup_future_usage="off_session" if inv["parent"] else None,
        payment_method_options={"card": {"request_three_d_secure": "automatic"}},
        _invoice=inv["id"],
    )
    state.add("payment_intent", intent)
    _new_payment(state, inv, {"type": "payment_intent", "payment_intent": pi_id}, default=True)
    inv["_payment_intent"] = pi_id


def _open_default(state: FakeState, inv: Json) -> tuple[Json, Json] | None:
    pi_id = inv.get("_payment_intent")
    intent = state.find("payment_intent", str(pi_id)) if pi_id else None
    if intent is None:
        return None
    payment = next(
        p
        for p in payments_of(state, inv["id"])
        if p["payment"].get("payment_intent") == intent["id"]
    )
    return intent, payment


def record_success(state: FakeState, inv: Json, pm: Json | None) -> None:
    found = _open_default(state, inv)
    if found is None:
        return
    intent, payment = found
    now = state.clock.now()
    intent.update(
        status="succeeded",
        payment_method=pm["id"] if pm else intent["payment_method"],
        amount_received=intent["amount"],
        latest_charge="ch_" + random_token(),
        last_payment_error=None,
        next_action=None,
    )
    payment.update(status="paid", amount_paid=payment["amount_requested"])
    payment["status_transitions"]["paid_at"] = now


def record_failure(state: FakeState, inv: Json, pm: Json | None, error: StripeError) -> None:
    found = _open_default(state, inv)
    if found is None:
        return
    intent, _payment = found
    rendered_pm = state.render(pm) if pm else None
    intent.update(
        status="requires_payment_method",
        payment_method=None,
        last_payment_error=error_object(error, rendered_pm),
        next_action=None,
    )
    error.extra.setdefault("payment_intent", state.render(intent))


def record_action_required(state: FakeState, inv: Json, pm: Json) -> None:
    found = _open_default(state, inv)
    if found is None:
        return
    intent, _payment = found
    intent.update(
        status="requires_action",
        payment_method=pm["id"],
        last_payment_error=None,
        # Stripe.js handles 3-D Secure; the hosted invoice page does it for the customer.
        next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure"}},
    )


def intent_of(state: FakeState, inv: Json) -> Json | None:
    found = _open_default(state, inv)
    return found[0] if found else None


def cancel_open(state: FakeState, inv: Json, reason: str) -> None:
    """Open payments of a voided (or out-of-band paid) invoice are canceled, with their
    PaymentIntents."""
    now = state.clock.now()
    for payment in payments_of(state, inv["id"]):
        if payment["status"] != "open":
            continue
        payment["status"] = "canceled"
        payment["status_transitions"]["canceled_at"] = now
        pi_id = payment["payment"].get("payment_intent")
        if pi_id and (intent := state.find("payment_intent", pi_id)):
            intent.update(
                status="canceled", canceled_at=now, cancellation_reason=reason, next_action=None
            )


def record_out_of_band(state: FakeState, inv: Json, amount: int) -> None:
    cancel_open(state, inv, "automatic")
    record = _new_payment(
        state,
        inv,
        {"type": "payment_record", "payment_record": "pr_" + random_token()},
        default=False,
    )
    record.update(status="paid", amount_requested=amount, amount_paid=amount)
    record["status_transitions"]["paid_at"] = state.clock.now()


# --- API -------------------------------------------------------------------------------------


@routes.get("/v1/invoice_payments", params=Allow(InvoicePaymentListParams))
def list_invoice_payments(ctx: Ctx) -> Json:
    p = ctx.params
    invoice = get_str(p, "invoice")
    status = get_str(p, "status")
    if status and status not in ("open", "paid", "canceled"):
        raise invalid("Invalid status: must be one of open, paid, or canceled", param="status")
    payment = get_dict(p, "payment") or {}
    kind = get_str(payment, "type")
    intent = get_str(payment, "payment_intent")
    in_range = created_filter(p)
    every = ctx.state.newest_first("invoice_payment")
    rows = [
        r
        for r in every
        if (not invoice or r["invoice"] == invoice)
        and (not status or r["status"] == status)
        and (not kind or r["payment"]["type"] == kind)
        and (not intent or r["payment"].get("payment_intent") == intent)
        and in_range(r)
    ]
    return paginate(
        rows, p, "/v1/invoice_payments", ctx.state.render, "invoice_payment", unfiltered=every
    )


@routes.get("/v1/invoice_payments/{id}", params=Allow(InvoicePaymentRetrieveParams))
def retrieve_invoice_payment(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("invoice_payment", ctx.arg("id")))


@routes.get("/v1/payment_intents/{id}", params=Allow(PaymentIntentRetrieveParams))
def retrieve_payment_intent(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("payment_intent", ctx.arg("id"), "intent"))
