"""``POST /v1/invoices/create_preview``: the next invoice a subscription will produce.

Mounted before the invoice routes so ``create_preview`` is not taken for an invoice id.
Supports previewing item changes through ``subscription_details[items]`` (price/quantity
changes, additions, deletions — without proration, see README).
"""

from __future__ import annotations

from typing import Any

from stripe.params import InvoiceCreatePreviewParams

from . import invoices
from .customers import live_customer
from .errors import StripeError, invalid
from .forms import get_bool, get_dict, get_int, get_list, get_str
from .params import Allow
from .periods import period
from .routing import Ctx, Routes
from .state import FakeState, random_token
from .subscriptions import current_period, cycle_lines, is_metered, items_of, price_of

Json = dict[str, Any]
routes = Routes()


def _none_upcoming(customer: str) -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"No upcoming invoices for customer: {customer}",
        code="invoice_upcoming_none",
    )


def _apply_overrides(
    state: FakeState, specs: list[tuple[str | None, Json, int | None]], raw: list[Any]
) -> list[tuple[str | None, Json, int | None]]:
    by_id = {spec[0]: spec for spec in specs}
    added: list[tuple[str | None, Json, int | None]] = []
    for i, change in enumerate(raw):
        if not isinstance(change, dict):
            raise invalid("Invalid array", param="subscription_details[items]")
        item_id = get_str(change, "id")
        price_id = get_str(change, "price")
        qty = get_int(change, "quantity")
        if item_id:
            if item_id not in by_id:
                raise invalid(
                    f"No such subscription item: '{item_id}'",
                    param=f"subscription_details[items][{i}][id]",
                    code="resource_missing",
                )
            _sid, price, old_qty = by_id[item_id]
            if get_bool(change, "deleted"):
                del by_id[item_id]
                continue
            if price_id:
                price = state.get("price", price_id, f"subscription_details[items][{i}][price]")
            by_id[item_id] = (item_id, price, old_qty if qty is None else qty)
        elif price_id:
            price = state.get("price", price_id, f"subscription_details[items][{i}][price]")
            added.append((None, price, None if is_metered(price) else (qty or 1)))
    return list(by_id.values()) + added


def _temporary_ids(lines: list[Json]) -> None:
    """Preview lines are never stored: Stripe gives them ``il_tmp_`` ids, and an item that
    doesn't exist yet (a new subscription, or one added in ``subscription_details[items]``)
    a temporary ``si_tmp_`` id, since ``subscription_item_details.subscription_item`` is never
    null in today's API."""
    for line in lines:
        line["id"] = "il_tmp_" + random_token()
        details = line["parent"]["subscription_item_details"]
        if details["subscription_item"] is None:
            details["subscription_item"] = "si_tmp_" + random_token()


@routes.post("/v1/invoices/create_preview", params=Allow(InvoiceCreatePreviewParams))
def create_preview(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    details = get_dict(p, "subscription_details") or {}
    sub_id = get_str(p, "subscription")
    customer_id = get_str(p, "customer")
    sub: Json | None
    if sub_id:
        sub = state.get("subscription", sub_id, "subscription")
        customer_id = customer_id or sub["customer"]
    elif customer_id:
        live = [
            s
            for s in state.newest_first("subscription")
            if s["customer"] == customer_id and s["status"] in ("active", "trialing", "past_due")
        ]
        # Without exactly one live subscription, preview a new one from subscription_details.
        sub = live[0] if len(live) == 1 and not details.get("items") else None
    else:
        raise invalid(
            "Missing required param: customer or subscription.",
            param="customer",
            code="parameter_missing",
        )
    customer = live_customer(state, customer_id)
    now = state.clock.now()
    if sub is None:
        # Preview of a brand-new subscription described by subscription_details[items].
        specs = _apply_overrides(state, [], get_list(details, "items"))
        if not specs:
            raise _none_upcoming(customer_id)
        recurring = specs[0][1]["recurring"]
        start, end = period(now, recurring, 0)
        fake_sub: Json = {
            "id": None,
            "customer": customer_id,
            "metadata": {},
            "collection_method": "charge_automatically",
        }
        lines = cycle_lines(state, fake_sub, start, end, trial=False, previous=None, items=specs)
        reason, p_start, p_end, currency = "subscription_create", now, now, specs[0][1]["currency"]
        sub_for_invoice = None
    else:
        if sub["status"] not in ("active", "trialing", "past_due"):
            raise _none_upcoming(customer_id)
        cur_start, cur_end = current_period(state, sub)
        if sub["cancel_at"] is not None and int(sub["cancel_at"]) <= cur_end:
            raise _none_upcoming(customer_id)
        specs = [(i["id"], price_of(state, i), i["quantity"]) for i in items_of(state, sub)]
        specs = _apply_overrides(state, specs, get_list(details, "items"))
        if not specs:
            raise _none_upcoming(customer_id)
        recurring = specs[0][1]["recurring"]
        if sub["status"] == "trialing":
            start, end = period(int(sub["trial_end"]), recurring, 0)
            previous = None
        else:
            start, end = period(int(sub["_anchor"]), recurring, int(sub["_cycle"]) + 1)
            previous = (cur_start, min(cur_end, now)) if cur_start < now else None
        lines = cycle_lines(state, sub, start, end, trial=False, previous=previous, items=specs)
        reason, p_start, p_end, currency = "subscription_cycle", cur_start, cur_end, sub["currency"]
        sub_for_invoice = sub
    _temporary_ids(lines)
    with state.clock.pinned(start):
        inv = invoices.new_invoice(
            state,
            customer=customer,
            subscription=sub_for_invoice,
            lines=lines,
            billing_reason=reason,
            period_start=p_start,
            period_end=p_end,
            currency=currency,
            invoice_id="upcoming_in_" + random_token(),
        )
    inv.pop("_token")
    inv["next_payment_attempt"] = start + invoices.FINALIZE_DELAY if sub_for_invoice else None
    return state.render(inv)
