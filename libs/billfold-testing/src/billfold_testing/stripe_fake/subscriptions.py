"""Subscriptions: create (items, trials, collection method), update, cancel, resume, list.

Current-API shape: the billing period lives on each *item* (``current_period_start/end``).
Time-driven transitions (trial end, renewal, cancel at period end) are in ``clock.py``.
"""

from __future__ import annotations

from typing import Any

from stripe.params import (
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionItemListParams,
    SubscriptionItemRetrieveParams,
    SubscriptionListParams,
    SubscriptionPauseParams,
    SubscriptionResumeParams,
    SubscriptionRetrieveParams,
    SubscriptionUpdateParams,
)

from . import invoices, shapes
from . import payment_methods as pms
from .catalog import amount_for, plan_of
from .customers import live_customer
from .errors import invalid, missing_param
from .events import emit, emit_update
from .forms import enum, get_bool, get_dict, get_int, get_list, get_str, merge_metadata
from .lists import created_filter, list_object, paginate
from .meters import usage
from .params import Allow
from .periods import DAY, period
from .routing import Ctx, Routes
from .state import RENDERERS, FakeState

Json = dict[str, Any]
routes = Routes()
TRIAL_WILL_END_NOTICE = 3 * DAY
_ENDED = ("canceled", "incomplete_expired")


# --- rendering -------------------------------------------------------------------------------


def _render_item(state: FakeState, out: Json) -> Json:
    price = state.get("price", out["price"], "price")
    out["price"] = state.render(price)
    out["plan"] = plan_of(price)
    return out


def _render_subscription(state: FakeState, out: Json) -> Json:
    record = state.get("subscription", out["id"])
    out["items"] = list_object(
        [state.render(state.get("subscription_item", i)) for i in record["_items"]],
        f"/v1/subscription_items?subscription={out['id']}",
    )
    return out


RENDERERS["subscription_item"] = _render_item
RENDERERS["subscription"] = _render_subscription


# --- helpers ---------------------------------------------------------------------------------


def items_of(state: FakeState, sub: Json) -> list[Json]:
    return [state.get("subscription_item", i) for i in sub["_items"]]


def price_of(state: FakeState, item: Json) -> Json:
    return state.get("price", item["price"], "price")


def recurring_of(state: FakeState, sub: Json) -> Json:
    return dict(price_of(state, items_of(state, sub)[0])["recurring"])


def is_metered(price: Json) -> bool:
    return bool(price["recurring"] and price["recurring"]["usage_type"] == "metered")


def set_period(state: FakeState, sub: Json, start: int, end: int) -> None:
    for item in items_of(state, sub):
        item["current_period_start"] = start
        item["current_period_end"] = end


def current_period(state: FakeState, sub: Json) -> tuple[int, int]:
    first = items_of(state, sub)[0]
    return int(first["current_period_start"]), int(first["current_period_end"])


def cycle_lines(
    state: FakeState,
    sub: Json,
    start: int,
    end: int,
    *,
    trial: bool,
    previous: tuple[int, int] | None,
    items: list[tuple[str | None, Json, int | None]] | None = None,
) -> list[Json]:
    """Lines for the period ``[start, end)``: licensed items in advance, metered usage of
    the ``previous`` period in arrears (none on the first invoice)."""
    specs = (
        items
        if items is not None
        else [(i["id"], price_of(state, i), i["quantity"]) for i in items_of(state, sub)]
    )
    lines = []
    for item_id, price, quantity in specs:
        if is_metered(price):
            meter_start, meter_end = previous if previous else (start, end)
            used = (
                usage(state, price["recurring"]["meter"], sub["customer"], meter_start, meter_end)
                if previous
                else 0
            )
            qty, line_start, line_end = round(used), meter_start, meter_end
        else:
            qty, line_start, line_end = int(quantity or 0), start, end
        lines.append(
            invoices.make_line(
                state,
                invoice_id=None,
                subscription_id=sub["id"],
                item_id=item_id,
                price=price,
                quantity=qty,
                start=line_start,
                end=line_end,
                trial=trial and not is_metered(price),
            )
        )
    return lines


def has_payment_method(state: FakeState, sub: Json) -> bool:
    customer = state.get("customer", sub["customer"], "customer")
    return bool(
        sub["default_payment_method"] or customer["invoice_settings"]["default_payment_method"]
    )


def set_status(state: FakeState, sub: Json, status: str) -> None:
    if sub["status"] == status:
        return
    before = state.render(sub)
    sub["status"] = status
    emit_update(state, "customer.subscription.updated", before, state.render(sub))


def on_invoice_paid(state: FakeState, inv: Json) -> None:
    sub = state.find("subscription", invoices.subscription_of(inv) or "")
    if sub and sub["status"] in ("incomplete", "past_due", "unpaid"):
        set_status(state, sub, "active")


def on_invoice_payment_failed(state: FakeState, inv: Json) -> None:
    # A send_invoice subscription falls past_due at the due date (not modelled), not when a
    # customer's payment attempt fails.
    if inv["collection_method"] != "charge_automatically":
        return
    sub = state.find("subscription", invoices.subscription_of(inv) or "")
    if sub and sub["status"] == "active":
        set_status(state, sub, "past_due")


def on_retries_exhausted(state: FakeState, inv: Json) -> None:
    """Every Smart Retry failed: the subscription ends as the dunning policy says."""
    sub = state.find("subscription", invoices.subscription_of(inv) or "")
    if sub is None or sub["status"] not in ("active", "past_due"):
        return
    after = state.dunning.after_retries
    if after == "canceled":
        sub["cancellation_details"]["reason"] = "payment_failed"
        cancel_now(state, sub, "payment_failed")
    elif after == "unpaid":
        set_status(state, sub, "unpaid")


def invoice_for_current_period(
    state: FakeState, sub: Json, billing_reason: str, *, trial: bool
) -> Json:
    """The (unsaved) invoice for the current period, billed at once: at subscription start
    and on resume. It becomes the subscription's ``latest_invoice``."""
    start, end = current_period(state, sub)
    customer = state.get("customer", sub["customer"], "customer")
    inv = invoices.new_invoice(
        state,
        customer=customer,
        subscription=sub,
        lines=cycle_lines(state, sub, start, end, trial=trial, previous=None),
        billing_reason=billing_reason,
        period_start=start,
        period_end=start,
        currency=sub["currency"],
    )
    sub["latest_invoice"] = inv["id"]
    return inv


def issue_and_collect(state: FakeState, sub: Json, inv: Json, *, charge: bool = True) -> None:
    """Save, finalize and (when collecting automatically) charge an invoice right away."""
    invoices.save_draft(state, inv, None)
    invoices.finalize(state, inv)
    if charge and inv["status"] == "open" and sub["collection_method"] == "charge_automatically":
        invoices.attempt_payment(state, inv)


def cancel_now(state: FakeState, sub: Json, reason: str = "cancellation_requested") -> None:
    now = state.clock.now()
    sub.update(status="canceled", ended_at=now, cancel_at=sub["cancel_at"])
    if sub["canceled_at"] is None:
        sub["canceled_at"] = now
    sub["cancellation_details"]["reason"] = sub["cancellation_details"]["reason"] or reason
    emit(state, "customer.subscription.deleted", state.render(sub))


# --- create ----------------------------------------------------------------------------------


def _item_specs(state: FakeState, raw_items: list[Any]) -> list[tuple[Json, int | None, Json]]:
    specs: list[tuple[Json, int | None, Json]] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise invalid("Invalid array", param="items")
        price_id = get_str(raw, "price") or get_str(raw, "plan")
        if not price_id:
            raise missing_param(f"items[{i}][price]")
        price = state.get("price", price_id, f"items[{i}][price]")
        if price["type"] != "recurring":
            raise invalid(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                param=f"items[{i}][price]",
            )
        if not price["active"]:
            raise invalid(
                "The price specified is inactive. This field only accepts active prices.",
                param=f"items[{i}][price]",
            )
        if price_id in seen:
            raise invalid(
                "Cannot add multiple subscription items with the same price.",
                param=f"items[{i}][price]",
            )
        seen.add(price_id)
        quantity = get_int(raw, "quantity", param=f"items[{i}][quantity]")
        if is_metered(price):
            if quantity is not None:
                raise invalid(
                    "Quantity should not be specified where usage_type is `metered`.",
                    param=f"items[{i}][quantity]",
                )
        else:
            quantity = 1 if quantity is None else quantity
            if quantity < 0:
                raise invalid(
                    "This value must be greater than or equal to 0.",
                    param=f"items[{i}][quantity]",
                )
        meta = merge_metadata({}, raw.get("metadata"), param=f"items[{i}][metadata]")
        specs.append((price, quantity, meta))
    first = specs[0][0]
    for price, _q, _m in specs[1:]:
        if price["currency"] != first["currency"]:
            raise invalid(
                "All prices on a subscription must have the same currency.", param="items"
            )
        rec, frec = price["recurring"], first["recurring"]
        if (rec["interval"], rec["interval_count"]) != (frec["interval"], frec["interval_count"]):
            raise invalid(
                "All prices on a subscription must have the same `recurring.interval` and "
                "`recurring.interval_count`.",
                param="items",
            )
    return specs


def _new_item(state: FakeState, sub_id: str, price: Json, quantity: int | None, meta: Json) -> Json:
    item = shapes.blank("subscription_item")
    item.update(
        id=state.new_id("si_", 14),
        created=state.clock.now(),
        price=price["id"],
        quantity=quantity,
        subscription=sub_id,
        metadata=meta,
    )
    return state.add("subscription_item", item)


def _trial_end(p: Json, now: int, specs: list[tuple[Json, int | None, Json]]) -> int | None:
    raw = p.get("trial_end")
    if raw == "now":
        return None
    if raw not in (None, ""):
        end = get_int(p, "trial_end")
        assert end is not None
        if end <= now:
            raise invalid(
                "Invalid timestamp: must be an integer Unix timestamp in the future.",
                param="trial_end",
            )
        return end
    days = get_int(p, "trial_period_days")
    if days is None and get_bool(p, "trial_from_plan"):
        days = specs[0][0]["recurring"]["trial_period_days"]
    if days:
        if days < 0 or days > 730:
            raise invalid("trial_period_days must be between 0 and 730.", param="trial_period_days")
        return now + days * DAY
    return None


@routes.post("/v1/subscriptions", params=Allow(SubscriptionCreateParams))
def create_subscription(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    customer_id = get_str(p, "customer")
    if not customer_id:
        raise missing_param("customer")
    customer = live_customer(state, customer_id)
    raw_items = get_list(p, "items")
    if not raw_items:
        raise missing_param("items")
    specs = _item_specs(state, raw_items)
    method = enum(p, "collection_method", ("charge_automatically", "send_invoice"))
    method = method or "charge_automatically"
    days_until_due = get_int(p, "days_until_due")
    if method == "send_invoice" and days_until_due is None:
        raise missing_param("days_until_due")
    behavior = (
        enum(
            p,
            "payment_behavior",
            (
                "allow_incomplete",
                "default_incomplete",
                "error_if_incomplete",
                "pending_if_incomplete",
            ),
        )
        or "allow_incomplete"
    )
    pm_id = get_str(p, "default_payment_method")
    if pm_id:
        pms.require_attached(state, pm_id, customer_id, "default_payment_method")
    now = state.clock.now()
    trial_end = _trial_end(p, now, specs)
    recurring = specs[0][0]["recurring"]
    anchor = trial_end or now
    first_amount = (
        0
        if trial_end
        else sum(amount_for(price, q or 0) for price, q, _m in specs if not is_metered(price))
    )
    collects_now = method == "charge_automatically" and first_amount > 0
    if collects_now and behavior == "error_if_incomplete":
        # Stripe creates nothing when the first payment is declined in this mode.
        pm = state.find("payment_method", pm_id or "") or state.find(
            "payment_method", customer["invoice_settings"]["default_payment_method"] or ""
        )
        if error := pms.charge_error(pm, first_amount, specs[0][0]["currency"]):
            raise error

    sub = shapes.blank("subscription")
    sub_id = state.new_id("sub_")
    end_behavior = (
        get_str(
            get_dict(get_dict(p, "trial_settings") or {}, "end_behavior") or {},
            "missing_payment_method",
        )
        or "create_invoice"
    )
    sub.update(
        id=sub_id,
        created=now,
        start_date=now,
        billing_cycle_anchor=anchor,
        currency=specs[0][0]["currency"],
        customer=customer_id,
        collection_method=method,
        days_until_due=days_until_due if method == "send_invoice" else None,
        default_payment_method=pm_id,
        description=get_str(p, "description"),
        metadata=merge_metadata({}, p.get("metadata")),
        status="trialing" if trial_end else ("incomplete" if collects_now else "active"),
        trial_start=now if trial_end else None,
        trial_end=trial_end,
        trial_settings={"end_behavior": {"missing_payment_method": end_behavior}},
        _items=[],
        _anchor=anchor,
        _cycle=-1 if trial_end else 0,
        _trial_will_end_sent=False,
    )
    state.add("subscription", sub)
    for price, quantity, meta in specs:
        sub["_items"].append(_new_item(state, sub_id, price, quantity, meta)["id"])
    start, end = (now, trial_end) if trial_end else period(anchor, recurring, 0)
    set_period(state, sub, start, end)
    if get_bool(p, "cancel_at_period_end"):
        sub.update(cancel_at_period_end=True, cancel_at=end, canceled_at=now)
        sub["cancellation_details"]["reason"] = "cancellation_requested"

    inv = invoice_for_current_period(state, sub, "subscription_create", trial=bool(trial_end))
    emit(state, "customer.subscription.created", state.render(sub))
    # default_incomplete leaves the first invoice open for the client to confirm payment.
    issue_and_collect(state, sub, inv, charge=behavior != "default_incomplete")
    if trial_end and trial_end - now <= TRIAL_WILL_END_NOTICE:
        sub["_trial_will_end_sent"] = True
        emit(state, "customer.subscription.trial_will_end", state.render(sub))
    return state.render(sub)


# --- read ------------------------------------------------------------------------------------


@routes.get("/v1/subscriptions/{id}", params=Allow(SubscriptionRetrieveParams))
def retrieve_subscription(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("subscription", ctx.arg("id")))


@routes.get("/v1/subscriptions", params=Allow(SubscriptionListParams))
def list_subscriptions(ctx: Ctx) -> Json:
    p = ctx.params
    customer = get_str(p, "customer")
    status = get_str(p, "status")
    price = get_str(p, "price")
    in_range = created_filter(p)

    def status_ok(sub: Json) -> bool:
        if status == "all":
            return True
        if status == "ended":
            return sub["status"] in _ENDED
        if status:
            return bool(sub["status"] == status)
        return sub["status"] not in _ENDED  # Stripe hides canceled ones by default

    every = ctx.state.newest_first("subscription")
    rows = [
        s
        for s in every
        if (not customer or s["customer"] == customer)
        and status_ok(s)
        and (not price or any(i["price"] == price for i in items_of(ctx.state, s)))
        and in_range(s)
    ]
    return paginate(
        rows, p, "/v1/subscriptions", ctx.state.render, "subscription", unfiltered=every
    )


@routes.get("/v1/subscription_items", params=Allow(SubscriptionItemListParams))
def list_items(ctx: Ctx) -> Json:
    sub_id = get_str(ctx.params, "subscription")
    if not sub_id:
        raise missing_param("subscription")
    sub = ctx.state.get("subscription", sub_id, "subscription")
    rows = items_of(ctx.state, sub)
    return paginate(
        rows, ctx.params, f"/v1/subscription_items?subscription={sub_id}", ctx.state.render
    )


@routes.get("/v1/subscription_items/{id}", params=Allow(SubscriptionItemRetrieveParams))
def retrieve_item(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("subscription_item", ctx.arg("id")))


# --- update / cancel / resume ----------------------------------------------------------------


def _update_items(state: FakeState, sub: Json, raw_items: list[Any]) -> None:
    for i, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise invalid("Invalid array", param="items")
        item_id = get_str(raw, "id")
        if item_id:
            item = state.get("subscription_item", item_id, f"items[{i}][id]")
            if item["subscription"] != sub["id"]:
                raise invalid(
                    f"Subscription item {item_id} does not belong to this subscription.",
                    param=f"items[{i}][id]",
                )
            if get_bool(raw, "deleted"):
                sub["_items"].remove(item_id)
                item["_deleted"] = True
                continue
            if price_id := get_str(raw, "price"):
                item["price"] = state.get("price", price_id, f"items[{i}][price]")["id"]
            if (qty := get_int(raw, "quantity", param=f"items[{i}][quantity]")) is not None:
                item["quantity"] = qty
            item["metadata"] = merge_metadata(
                item["metadata"], raw.get("metadata"), param=f"items[{i}][metadata]"
            )
        else:
            [(price, qty_new, meta)] = _item_specs(state, [raw])
            start, end = current_period(state, sub)
            item = _new_item(state, sub["id"], price, qty_new, meta)
            item.update(current_period_start=start, current_period_end=end)
            sub["_items"].append(item["id"])
    if not sub["_items"]:
        raise invalid("A subscription must have at least one active plan.", param="items")


@routes.post("/v1/subscriptions/{id}", params=Allow(SubscriptionUpdateParams))
def update_subscription(ctx: Ctx) -> Json:
    from .clock import end_trial  # late: clock imports this module

    state, p = ctx.state, ctx.params
    sub = state.get("subscription", ctx.arg("id"))
    before = state.render(sub)
    if sub["status"] in _ENDED and set(p) - {"metadata", "cancellation_details", "expand"}:
        raise invalid(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    sub["metadata"] = merge_metadata(sub["metadata"], p.get("metadata"))
    if (details := get_dict(p, "cancellation_details")) is not None:
        for key in ("comment", "feedback"):
            if key in details:
                sub["cancellation_details"][key] = get_str(details, key) or None
    if "description" in p:
        sub["description"] = get_str(p, "description") or None
    if "default_payment_method" in p:
        pm_id = get_str(p, "default_payment_method")
        if pm_id:
            pms.require_attached(state, pm_id, sub["customer"], "default_payment_method")
        sub["default_payment_method"] = pm_id or None
    if method := enum(p, "collection_method", ("charge_automatically", "send_invoice")):
        sub["collection_method"] = method
        sub["days_until_due"] = get_int(p, "days_until_due") if method == "send_invoice" else None
        if method == "send_invoice" and sub["days_until_due"] is None:
            raise missing_param("days_until_due")
    if "items" in p:
        _update_items(state, sub, get_list(p, "items"))
    now = state.clock.now()
    if "pause_collection" in p:
        sub["pause_collection"] = _pause_collection(p, now)
    if (flag := get_bool(p, "cancel_at_period_end")) is not None:
        if flag:
            sub.update(cancel_at_period_end=True, cancel_at=current_period(state, sub)[1])
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub.update(cancel_at_period_end=False, cancel_at=None, canceled_at=None)
            sub["cancellation_details"]["reason"] = None
    if "cancel_at" in p:
        cancel_at = get_int(p, "cancel_at")
        if cancel_at is not None and cancel_at <= now:
            raise invalid("cancel_at must be in the future.", param="cancel_at")
        sub.update(
            cancel_at=cancel_at,
            canceled_at=now if cancel_at else None,
            cancel_at_period_end=cancel_at == current_period(state, sub)[1],
        )
        sub["cancellation_details"]["reason"] = "cancellation_requested" if cancel_at else None
    trial_end_now = False
    if "trial_end" in p and sub["status"] == "trialing":
        if p["trial_end"] == "now":
            trial_end_now = True
        else:
            new_end = get_int(p, "trial_end")
            assert new_end is not None
            if new_end <= now:
                raise invalid("Invalid timestamp: must be in the future.", param="trial_end")
            sub.update(trial_end=new_end, _anchor=new_end)
            set_period(state, sub, current_period(state, sub)[0], new_end)
    emit_update(state, "customer.subscription.updated", before, state.render(sub))
    if trial_end_now:
        end_trial(state, sub)
    return state.render(sub)


def _pause_collection(p: Json, now: int) -> Json | None:
    """``pause_collection[behavior]`` (and optionally ``[resumes_at]``) pauses payment
    collection; ``pause_collection=""`` resumes it. The status stays as it is: this is not
    the ``paused`` status (no ``customer.subscription.paused``/``resumed`` events, as on
    Stripe, only ``customer.subscription.updated``)."""
    if p["pause_collection"] == "":
        return None
    raw = get_dict(p, "pause_collection") or {}
    behavior = enum(
        raw,
        "behavior",
        ("keep_as_draft", "mark_uncollectible", "void"),
        param="pause_collection[behavior]",
    )
    if behavior is None:
        raise missing_param("pause_collection[behavior]")
    resumes_at = get_int(raw, "resumes_at", param="pause_collection[resumes_at]")
    if resumes_at is not None and resumes_at <= now:
        raise invalid(
            "Invalid timestamp: must be in the future.", param="pause_collection[resumes_at]"
        )
    return {"behavior": behavior, "resumes_at": resumes_at}


@routes.delete("/v1/subscriptions/{id}", params=Allow(SubscriptionCancelParams))
def cancel_subscription(ctx: Ctx) -> Json:
    state = ctx.state
    sub = state.get("subscription", ctx.arg("id"))
    if sub["status"] in _ENDED:
        raise invalid(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    if (details := get_dict(ctx.params, "cancellation_details")) is not None:
        for key in ("comment", "feedback"):
            if key in details:
                sub["cancellation_details"][key] = get_str(details, key) or None
    sub["canceled_at"] = None
    cancel_now(state, sub)
    return state.render(sub)


def pause_now(state: FakeState, sub: Json, reason: str) -> None:
    """Status ``paused`` (no invoices, no new periods until resumed), with
    ``status_details.paused`` saying when and why, and Stripe's two events."""
    before = state.render(sub)
    sub["status"] = "paused"
    sub["status_details"] = {
        "paused": {
            "type": "subscription",
            "subscription": {"type": reason},
            "transitioned_at": state.clock.now(),
        }
    }
    after = state.render(sub)
    emit_update(state, "customer.subscription.updated", before, after)
    emit(state, "customer.subscription.paused", after)


#: Statuses a subscription can be paused from (on demand).
_PAUSABLE = frozenset({"active", "trialing", "past_due", "unpaid"})


@routes.post("/v1/subscriptions/{id}/pause", params=Allow(SubscriptionPauseParams))
def pause_subscription(ctx: Ctx) -> Json:
    """Pause on demand (API 2026-09-30.endive on): status ``paused`` until ``/resume``.
    ``bill_for`` and ``invoicing_behavior`` are accepted and ignored (no prorations and
    no invoice for the usage so far, as with ``outstanding_usage_through=none``)."""
    state = ctx.state
    sub = state.get("subscription", ctx.arg("id"))
    enum(ctx.params, "type", ("subscription",))
    if sub["status"] not in _PAUSABLE:
        raise invalid(
            f"A subscription with status `{sub['status']}` can't be paused.",
        )
    pause_now(state, sub, "pause_requested")
    return state.render(sub)


@routes.post("/v1/subscriptions/{id}/resume", params=Allow(SubscriptionResumeParams))
def resume_subscription(ctx: Ctx) -> Json:
    state = ctx.state
    sub = state.get("subscription", ctx.arg("id"))
    if sub["status"] != "paused":
        raise invalid(
            "Only a subscription with status `paused` can be resumed.",
        )
    # A hash since 2026-09-30.endive (`billing_cycle_anchor[type]`); a plain string before.
    anchor = ctx.params.get("billing_cycle_anchor")
    anchor_mode = (
        enum(
            get_dict(ctx.params, "billing_cycle_anchor") or {},
            "type",
            ("now", "unchanged"),
            param="billing_cycle_anchor[type]",
        )
        if isinstance(anchor, dict)
        else enum(ctx.params, "billing_cycle_anchor", ("now", "unchanged"))
    ) or "now"
    before = state.render(sub)
    now = state.clock.now()
    recurring = recurring_of(state, sub)
    if anchor_mode == "now":
        sub.update(_anchor=now, _cycle=0, billing_cycle_anchor=now)
    start, end = period(int(sub["_anchor"]), recurring, int(sub["_cycle"]))
    set_period(state, sub, start if anchor_mode == "now" else now, end)
    sub["status"] = "active"
    sub["status_details"] = None
    after = state.render(sub)
    emit_update(state, "customer.subscription.updated", before, after)
    emit(state, "customer.subscription.resumed", after)
    issue_and_collect(
        state, sub, invoice_for_current_period(state, sub, "subscription_update", trial=False)
    )
    return state.render(sub)
