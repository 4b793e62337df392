"""Invoices: building them from subscription items, their status machine, and the API.

Status machine as on Stripe: ``draft`` → (finalize) ``open`` → ``paid`` | ``void`` |
``uncollectible``; ``uncollectible`` can still be paid. Hosted page and PDF URLs appear at
finalization and point at the fake itself (see ``hosted.py``).
"""

from __future__ import annotations

from typing import Any

from stripe.params import (
    InvoiceFinalizeInvoiceParams,
    InvoiceLineItemListParams,
    InvoiceListParams,
    InvoiceMarkUncollectibleParams,
    InvoicePayParams,
    InvoiceRetrieveParams,
    InvoiceUpdateParams,
    InvoiceVoidInvoiceParams,
)

from . import payment_methods as pms
from . import payments, shapes
from .catalog import amount_for, format_amount
from .errors import StripeError, invalid
from .events import emit, emit_update
from .expand import INCLUDABLE
from .forms import get_bool, get_str, merge_metadata
from .lists import created_filter, list_object, paginate
from .params import Allow
from .periods import DAY
from .routing import Ctx, Routes
from .state import RENDERERS, FakeState, random_token

Json = dict[str, Any]
routes = Routes()
#: Stripe leaves renewal invoices in draft for about an hour before finalizing them.
FINALIZE_DELAY = 3600
#: Stripe writes line descriptions as "2 <times> Seat (at $3.00 / month)" with U+00D7
TIMES = "\u00d7"


def _render_invoice(state: FakeState, out: Json) -> Json:
    token = state.find("invoice", out["id"]) if out.get("id") else None
    if token and out["status"] != "draft":
        base = f"/i/{token['_token']}"
        out["hosted_invoice_url"] = state.url(base)
        out["invoice_pdf"] = state.url(base + "/pdf")
    return out


def _paid_off_stripe(state: FakeState, node: Json) -> Any:
    record = state.find("invoice", str(node.get("id")))
    return int(record.get("_paid_off_stripe", 0)) if record else 0


RENDERERS["invoice"] = _render_invoice
# Stripe: "You can include this property in API requests [expand[]=amount_paid_off_stripe].
# The property isn't available in event payloads."
INCLUDABLE[("invoice", "amount_paid_off_stripe")] = _paid_off_stripe


def subscription_of(inv: Json) -> str | None:
    """The subscription that generated ``inv`` (today's ``parent.subscription_details``;
    Stripe removed the top-level ``invoice.subscription``)."""
    parent = inv.get("parent") or {}
    if parent.get("type") != "subscription_details":
        return None
    sub_id = (parent.get("subscription_details") or {}).get("subscription")
    return str(sub_id) if sub_id else None


def describe_line(state: FakeState, price: Json, quantity: int, trial: bool) -> str:
    product = state.find("product", price["product"]) or {"name": price["product"]}
    name = str(product["name"])
    if trial:
        return f"Trial period for {name}"
    if price["billing_scheme"] == "tiered" or not price.get("recurring"):
        return f"{quantity} {TIMES} {name}"
    interval = price["recurring"]["interval"]
    unit = format_amount(int(price["unit_amount"]), price["currency"])
    return f"{quantity} {TIMES} {name} (at {unit} / {interval})"


def make_line(
    state: FakeState,
    *,
    invoice_id: str | None,
    subscription_id: str | None,
    item_id: str | None,
    price: Json,
    quantity: int,
    start: int,
    end: int,
    trial: bool = False,
) -> Json:
    amount = 0 if trial else amount_for(price, quantity)
    line = shapes.blank("line_item")
    line.update(
        id="il_" + random_token(),
        amount=amount,
        subtotal=amount,
        currency=price["currency"],
        description=describe_line(state, price, quantity, trial),
        discountable=True,
        invoice=invoice_id,
        period={"start": start, "end": end},
        quantity=quantity,
        subscription=subscription_id,
        pretax_credit_amounts=[],
        taxes=[],
        pricing={
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        parent={
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": item_id,
            },
        },
    )
    return line


def new_invoice(
    state: FakeState,
    *,
    customer: Json,
    subscription: Json | None,
    lines: list[Json],
    billing_reason: str,
    period_start: int,
    period_end: int,
    currency: str,
    invoice_id: str | None = None,
) -> Json:
    """An unsaved draft invoice (previews use it as is)."""
    now = state.clock.now()
    inv = shapes.blank("invoice")
    inv_id = invoice_id or state.new_id("in_")
    total = sum(int(line["amount"]) for line in lines)
    for line in lines:
        line["invoice"] = inv_id
    sub_id = subscription["id"] if subscription else None
    inv.update(
        id=inv_id,
        created=now,
        currency=currency,
        customer=customer["id"],
        customer_email=customer["email"],
        customer_name=customer["name"],
        customer_phone=customer["phone"],
        customer_address=customer["address"],
        customer_shipping=customer["shipping"],
        customer_tax_exempt=customer["tax_exempt"],
        customer_tax_ids=[
            {"type": t["type"], "value": t["value"]}
            for t in state.newest_first("tax_id")
            if t["customer"] == customer["id"]
        ],
        account_country="US",
        account_name="Billfold (fake Stripe)",
        billing_reason=billing_reason,
        collection_method=subscription["collection_method"]
        if subscription
        else "charge_automatically",
        auto_advance=True,
        attempt_count=0,
        attempted=False,
        amount_due=total,
        amount_paid=0,
        amount_overpaid=0,
        amount_remaining=total,
        amount_shipping=0,
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        total_taxes=[],
        total_pretax_credit_amounts=[],
        starting_balance=0,
        post_payment_credit_notes_amount=0,
        pre_payment_credit_notes_amount=0,
        period_start=period_start,
        period_end=period_end,
        webhooks_delivered_at=now,
        lines=list_object(lines, f"/v1/invoices/{inv_id}/lines"),
        parent=(
            {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(subscription["metadata"]),
                    "subscription": sub_id,
                },
            }
            if subscription
            else None
        ),
        _token="test_" + random_token(40),
        _paid_off_stripe=0,
        _retry_at=None,
    )
    return inv


def save_draft(state: FakeState, inv: Json, finalize_at: int | None) -> Json:
    inv["automatically_finalizes_at"] = finalize_at
    state.add("invoice", inv)
    emit(state, "invoice.created", state.render(inv))
    return inv


def finalize(state: FakeState, inv: Json) -> None:
    if inv["status"] != "draft":
        raise invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_not_editable",
        )
    now = state.clock.now()
    customer = state.get("customer", inv["customer"], "customer")
    seq = int(customer["next_invoice_sequence"])
    customer["next_invoice_sequence"] = seq + 1
    inv.update(
        status="open",
        number=f"{customer['invoice_prefix']}-{seq:04d}",
        effective_at=now,
        ending_balance=0,
        automatically_finalizes_at=None,
    )
    inv["status_transitions"]["finalized_at"] = now
    if inv["collection_method"] == "send_invoice":
        sub = state.find("subscription", subscription_of(inv) or "")
        days = int((sub or {}).get("days_until_due") or 30)
        inv["due_date"] = now + days * DAY
    else:
        inv["next_payment_attempt"] = now if inv["amount_due"] else None
    payments.open_default(state, inv)
    emit(state, "invoice.finalized", state.render(inv))
    if inv["amount_due"] == 0:
        # Nothing to collect: Stripe marks it paid right away.
        mark_paid(state, inv)


def mark_paid(
    state: FakeState, inv: Json, *, out_of_band: bool = False, pm: Json | None = None
) -> None:
    from .subscriptions import on_invoice_paid  # late: subscriptions imports this module

    now = state.clock.now()
    if out_of_band:
        inv["_paid_off_stripe"] = int(inv["_paid_off_stripe"]) + int(inv["amount_remaining"])
        payments.record_out_of_band(state, inv, int(inv["amount_remaining"]))
    else:
        payments.record_success(state, inv, pm)
    inv.update(
        status="paid",
        amount_paid=inv["amount_due"],
        amount_remaining=0,
        next_payment_attempt=None,
        auto_advance=False,
        _retry_at=None,
    )
    inv["status_transitions"]["paid_at"] = now
    rendered = state.render(inv)
    emit(state, "invoice.paid", rendered)
    emit(state, "invoice.payment_succeeded", rendered)
    on_invoice_paid(state, inv)


def payment_method_for(state: FakeState, inv: Json) -> Json | None:
    """Invoice's PM, else the subscription's default, else the customer's default."""
    sub = state.find("subscription", subscription_of(inv) or "")
    customer = state.find("customer", inv["customer"]) or {"invoice_settings": {}}
    for pm_id in (
        inv["default_payment_method"],
        (sub or {}).get("default_payment_method"),
        customer["invoice_settings"].get("default_payment_method"),
    ):
        if pm_id and (pm := state.find("payment_method", pm_id)):
            return pm
    return None


def _retries(inv: Json) -> bool:
    """Smart Retries apply to automatically collected invoices, except a subscription's first
    (an ``incomplete`` subscription waits for its customer instead)."""
    return (
        inv["collection_method"] == "charge_automatically"
        and bool(inv["auto_advance"])
        and inv["billing_reason"] != "subscription_create"
    )


def _schedule_retry(state: FakeState, inv: Json, *, counted: bool) -> bool:
    """Set the next automatic attempt after a failed one; True when retries are used up.
    A manual attempt after the first doesn't move the schedule, as on Stripe."""
    if not counted:
        return False
    delay = state.dunning.delay_after(int(inv["attempt_count"])) if _retries(inv) else None
    when = state.clock.now() + delay * DAY if delay is not None else None
    inv.update(next_payment_attempt=when, _retry_at=when)
    return delay is None and _retries(inv)


def action_required(state: FakeState, inv: Json) -> StripeError:
    intent = payments.intent_of(state, inv)
    return StripeError(
        402,
        "card_error",
        "This payment requires additional user action before it can be completed "
        "successfully. Payment can be completed using the PaymentIntent associated with the "
        "invoice. For more information, see the invoice's hosted_invoice_url.",
        code="invoice_payment_intent_requires_action",
        extra={"payment_intent": state.render(intent)} if intent else None,
    )


def attempt_payment(
    state: FakeState, inv: Json, pm: Json | None = None, *, automatic: bool = True
) -> StripeError | None:
    """Charge an open invoice; returns the card error on failure (events already sent).

    ``attempt_count`` counts the first attempt and every automatic retry; a manual attempt
    (``POST /pay``) after the first doesn't count, as on Stripe."""
    from .subscriptions import on_invoice_payment_failed, on_retries_exhausted  # late

    pm = pm or payment_method_for(state, inv)
    error = pms.charge_error(pm, int(inv["amount_due"]), str(inv["currency"]))
    counted = automatic or int(inv["attempt_count"]) == 0
    inv["attempted"] = True
    if counted:
        inv["attempt_count"] = int(inv["attempt_count"]) + 1
    if error is None and pm is not None and pms.needs_authentication(pm):
        payments.record_action_required(state, inv, pm)
        error = action_required(state, inv)
        action = True
    elif error is None:
        mark_paid(state, inv, pm=pm)
        return None
    else:
        payments.record_failure(state, inv, pm, error)
        action = False
    if pm is not None:
        error.extra.setdefault("payment_method", state.render(pm))
    exhausted = _schedule_retry(state, inv, counted=counted)
    inv["last_finalization_error"] = None
    rendered = state.render(inv)
    emit(state, "invoice.payment_failed", rendered)
    if action:
        emit(state, "invoice.payment_action_required", rendered)
    on_invoice_payment_failed(state, inv)
    if exhausted:
        on_retries_exhausted(state, inv)
    return error


def retry(state: FakeState, inv: Json) -> None:
    """The clock's automatic retry (Smart Retries) of a failed invoice payment."""
    inv["_retry_at"] = None
    if inv["status"] == "open":
        attempt_payment(state, inv, automatic=True)


# --- API -------------------------------------------------------------------------------------


@routes.get("/v1/invoices", params=Allow(InvoiceListParams))
def list_invoices(ctx: Ctx) -> Json:
    p = ctx.params
    customer = get_str(p, "customer")
    sub = get_str(p, "subscription")
    status = get_str(p, "status")
    method = get_str(p, "collection_method")
    in_range = created_filter(p)
    every = ctx.state.newest_first("invoice")
    rows = [
        inv
        for inv in every
        if (not customer or inv["customer"] == customer)
        and (not sub or subscription_of(inv) == sub)
        and (not status or inv["status"] == status)
        and (not method or inv["collection_method"] == method)
        and in_range(inv)
    ]
    return paginate(rows, p, "/v1/invoices", ctx.state.render, "invoice", unfiltered=every)


@routes.get("/v1/invoices/{id}", params=Allow(InvoiceRetrieveParams))
def retrieve_invoice(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("invoice", ctx.arg("id")))


@routes.get("/v1/invoices/{id}/lines", params=Allow(InvoiceLineItemListParams))
def list_lines(ctx: Ctx) -> Json:
    inv = ctx.state.get("invoice", ctx.arg("id"))
    lines = list(inv["lines"]["data"])
    return paginate(lines, ctx.params, inv["lines"]["url"], lambda x: dict(x), "line_item")


@routes.post("/v1/invoices/{id}", params=Allow(InvoiceUpdateParams))
def update_invoice(ctx: Ctx) -> Json:
    state = ctx.state
    inv = state.get("invoice", ctx.arg("id"))
    before = state.render(inv)
    inv["metadata"] = merge_metadata(inv["metadata"], ctx.params.get("metadata"))
    if "description" in ctx.params:
        inv["description"] = get_str(ctx.params, "description") or None
    if (auto := get_bool(ctx.params, "auto_advance")) is not None:
        inv["auto_advance"] = auto
        if not auto:  # no more automatic attempts
            inv.update(next_payment_attempt=None, _retry_at=None)
    after = state.render(inv)
    emit_update(state, "invoice.updated", before, after)
    return after


@routes.post("/v1/invoices/{id}/finalize", params=Allow(InvoiceFinalizeInvoiceParams))
def finalize_invoice(ctx: Ctx) -> Json:
    inv = ctx.state.get("invoice", ctx.arg("id"))
    finalize(ctx.state, inv)
    if (
        inv["status"] == "open"
        and inv["collection_method"] == "charge_automatically"
        and get_bool(ctx.params, "auto_advance") is not False
    ):
        attempt_payment(ctx.state, inv)
    return ctx.state.render(inv)


@routes.post("/v1/invoices/{id}/pay", params=Allow(InvoicePayParams))
def pay_invoice(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    inv = state.get("invoice", ctx.arg("id"))
    if inv["status"] == "draft":
        finalize(state, inv)
    if inv["status"] == "paid":
        raise invalid("Invoice is already paid.", code="invoice_already_paid")
    if inv["status"] == "void":
        raise invalid("This invoice has been voided and can no longer be paid.")
    if get_bool(p, "paid_out_of_band"):
        mark_paid(state, inv, out_of_band=True)
        return state.render(inv)
    pm = None
    if pm_id := get_str(p, "payment_method"):
        pm = pms.resolve(state, pm_id)
        # A card that Stripe declines on attach is declined here by the payment attempt.
        if pm["customer"] is None and not pms.card_spec(pm).fails_on_attach:
            pms.attach(state, pm, inv["customer"])
    error = attempt_payment(state, inv, pm, automatic=False)
    if error is not None:
        raise error
    return state.render(inv)


def _require_open(inv: Json, action: str) -> None:
    if inv["status"] not in ("open", "uncollectible") or (
        action == "mark_uncollectible" and inv["status"] != "open"
    ):
        raise invalid(
            f"You can only {action.replace('_', ' ')} an open invoice; this one is "
            f"{inv['status']}.",
            code="invoice_not_editable",
        )


@routes.post("/v1/invoices/{id}/void", params=Allow(InvoiceVoidInvoiceParams))
def void_invoice(ctx: Ctx) -> Json:
    state = ctx.state
    inv = state.get("invoice", ctx.arg("id"))
    _require_open(inv, "void")
    void(state, inv)
    return state.render(inv)


def void(state: FakeState, inv: Json) -> None:
    """Void an open invoice (the route, or a renewal while collection is paused)."""
    inv.update(
        status="void",
        amount_remaining=0,
        next_payment_attempt=None,
        auto_advance=False,
        _retry_at=None,
    )
    payments.cancel_open(state, inv, "void_invoice")
    inv["status_transitions"]["voided_at"] = state.clock.now()
    emit(state, "invoice.voided", state.render(inv))


@routes.post("/v1/invoices/{id}/mark_uncollectible", params=Allow(InvoiceMarkUncollectibleParams))
def mark_uncollectible(ctx: Ctx) -> Json:
    state = ctx.state
    inv = state.get("invoice", ctx.arg("id"))
    _require_open(inv, "mark_uncollectible")
    uncollectible(state, inv)
    return state.render(inv)


def uncollectible(state: FakeState, inv: Json) -> None:
    """Mark an open invoice uncollectible (the route, or a renewal while collection is
    paused)."""
    inv.update(
        status="uncollectible", next_payment_attempt=None, auto_advance=False, _retry_at=None
    )
    inv["status_transitions"]["marked_uncollectible_at"] = state.clock.now()
    emit(state, "invoice.marked_uncollectible", state.render(inv))
