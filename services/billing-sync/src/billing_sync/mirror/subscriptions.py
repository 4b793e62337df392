"""Subscriptions with their items, next charge (invoice preview) and metered usage."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from billfold.events import SubscriptionData, SubscriptionUpdated
from billing_sync.mirror import customers
from billing_sync.mirror.context import SyncContext, is_missing, plain, ref_id, ts

#: Statuses after which a subscription never bills again.
ENDED = frozenset({"canceled", "incomplete_expired"})
#: Statuses with a next invoice to preview.
BILLING = frozenset({"active", "trialing", "past_due"})
EXPAND = ["items.data.price.product", "items.data.price.tiers"]
MINUTE, DAY = 60, 86_400
#: Days of a period the portal's usage chart shows at most (one page of summaries).
MAX_DAYS = 92


def price_model(price: stripe.Price, quantity: int | None) -> str:
    """How the portal explains the price: flat, per_unit (quantity > 1), graduated, volume
    (tiered prices) or metered (billed on usage)."""
    recurring = price.recurring
    if recurring is not None and recurring.usage_type == "metered":
        if price.billing_scheme == "tiered" and price.tiers_mode:
            return str(price.tiers_mode)
        return "metered"
    if price.billing_scheme == "tiered" and price.tiers_mode:
        return str(price.tiers_mode)
    return "per_unit" if (quantity or 1) > 1 else "flat"


def _item_fields(item: stripe.SubscriptionItem) -> dict[str, Any]:
    price = item.price
    product = price.product
    recurring = price.recurring
    return {
        "stripe_id": item.id,
        "price_id": price.id,
        "product_id": ref_id(product),
        "product_name": getattr(product, "name", None) if not isinstance(product, str) else None,
        "price_model": price_model(price, item.quantity),
        "billing_scheme": price.billing_scheme,
        "usage_type": recurring.usage_type if recurring else None,
        "unit_amount": price.unit_amount,
        "unit_amount_decimal": None
        if price.unit_amount_decimal is None
        else str(price.unit_amount_decimal),
        "tiers": plain(price.tiers),
        "quantity": item.quantity,
        "interval": recurring.interval if recurring else None,
        "interval_count": recurring.interval_count if recurring else None,
        "currency": price.currency,
        "meter_id": recurring.meter if recurring else None,
        "current_period_start": ts(item.current_period_start),
        "current_period_end": ts(item.current_period_end),
    }


async def _preview(
    ctx: SyncContext, sub: stripe.Subscription
) -> tuple[datetime | None, int | None, str | None]:
    """When the next charge is due and how much, from Stripe's invoice preview."""
    if sub.status not in BILLING:
        return None, None, None
    try:
        preview = await ctx.client.v1.invoices.create_preview_async(params={"subscription": sub.id})
    except stripe.InvalidRequestError as exc:
        if exc.code == "invoice_upcoming_none":
            return None, None, None
        raise
    when = preview.next_payment_attempt or preview.period_end
    return ts(when), preview.amount_due, preview.currency


async def refresh(ctx: SyncContext, stripe_id: str) -> None:
    try:
        sub = await ctx.client.v1.subscriptions.retrieve_async(stripe_id, params={"expand": EXPAND})
    except stripe.InvalidRequestError as exc:
        if is_missing(exc):
            return  # never mirrored, or not this account's: nothing to show
        raise
    await apply(ctx, sub)


async def apply(ctx: SyncContext, sub: stripe.Subscription) -> None:
    """Write a subscription fetched (with ``EXPAND``) after the caller took its lock."""
    customer = await customers.resolve(ctx, str(ref_id(sub.customer)))
    if customer is None:
        return
    items = [_item_fields(i) for i in sub["items"].data]
    starts = [i["current_period_start"] for i in items if i["current_period_start"]]
    ends = [i["current_period_end"] for i in items if i["current_period_end"]]
    next_at, next_amount, next_currency = await _preview(ctx, sub)
    details = sub.cancellation_details
    paused = sub.pause_collection
    # The `paused` status's why and since when (absent from objects of older API versions).
    status_details = getattr(sub, "status_details", None)
    pause = status_details.paused if status_details and sub.status == "paused" else None
    row = await ctx.conn.fetchrow(
        """
        INSERT INTO mirror.subscriptions AS s (stripe_id, site_id, customer_id,
            stripe_customer_id, status, collection_method, currency, cancel_at_period_end,
            cancel_at, canceled_at, ended_at, cancellation_reason, cancellation_feedback,
            trial_start, trial_end, current_period_start, current_period_end,
            default_payment_method, next_charge_at, next_charge_amount, next_charge_currency,
            created, pause_collection_behavior, pause_collection_resumes_at, paused_reason,
            paused_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20, $21, $22, $23, $24, $25, $26)
        ON CONFLICT (stripe_id) DO UPDATE SET
            site_id = excluded.site_id, customer_id = excluded.customer_id,
            stripe_customer_id = excluded.stripe_customer_id, status = excluded.status,
            collection_method = excluded.collection_method, currency = excluded.currency,
            cancel_at_period_end = excluded.cancel_at_period_end,
            cancel_at = excluded.cancel_at, canceled_at = excluded.canceled_at,
            ended_at = excluded.ended_at, cancellation_reason = excluded.cancellation_reason,
            cancellation_feedback = excluded.cancellation_feedback,
            trial_start = excluded.trial_start, trial_end = excluded.trial_end,
            current_period_start = excluded.current_period_start,
            current_period_end = excluded.current_period_end,
            default_payment_method = excluded.default_payment_method,
            next_charge_at = excluded.next_charge_at,
            next_charge_amount = excluded.next_charge_amount,
            next_charge_currency = excluded.next_charge_currency,
            created = excluded.created,
            pause_collection_behavior = excluded.pause_collection_behavior,
            pause_collection_resumes_at = excluded.pause_collection_resumes_at,
            paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,
            updated_at = now(), synced_at = now()
        WHERE (s.site_id, s.customer_id, s.status, s.collection_method, s.currency,
               s.cancel_at_period_end, s.cancel_at, s.canceled_at, s.ended_at,
               s.cancellation_reason, s.cancellation_feedback, s.trial_start, s.trial_end,
               s.current_period_start, s.current_period_end, s.default_payment_method,
               s.next_charge_at, s.next_charge_amount, s.next_charge_currency,
               s.pause_collection_behavior, s.pause_collection_resumes_at,
               s.paused_reason, s.paused_at)
            IS DISTINCT FROM
              (excluded.site_id, excluded.customer_id, excluded.status,
               excluded.collection_method, excluded.currency, excluded.cancel_at_period_end,
               excluded.cancel_at, excluded.canceled_at, excluded.ended_at,
               excluded.cancellation_reason, excluded.cancellation_feedback,
               excluded.trial_start, excluded.trial_end, excluded.current_period_start,
               excluded.current_period_end, excluded.default_payment_method,
               excluded.next_charge_at, excluded.next_charge_amount,
               excluded.next_charge_currency, excluded.pause_collection_behavior,
               excluded.pause_collection_resumes_at, excluded.paused_reason,
               excluded.paused_at)
        RETURNING stripe_id
        """,
        sub.id,
        customer.site_id,
        customer.id,
        customer.stripe_id,
        sub.status,
        sub.collection_method,
        sub.currency,
        bool(sub.cancel_at_period_end),
        ts(sub.cancel_at),
        ts(sub.canceled_at),
        ts(sub.ended_at),
        details.reason if details else None,
        details.feedback if details else None,
        ts(sub.trial_start),
        ts(sub.trial_end),
        min(starts) if starts else None,
        max(ends) if ends else None,
        ref_id(sub.default_payment_method),
        next_at,
        next_amount,
        next_currency,
        ts(sub.created),
        paused.behavior if paused else None,
        ts(paused.resumes_at) if paused else None,
        pause.subscription.type if pause else None,
        ts(pause.transitioned_at) if pause else None,
    )
    changed = row is not None
    changed |= await _write_items(ctx, sub.id, customer.site_id, items)
    await _write_usage(ctx, sub, customer, items)
    if changed:
        await ctx.emit(
            SubscriptionUpdated(
                site_id=customer.site_id,
                data=SubscriptionData(
                    subscription_id=sub.id,
                    customer_id=customer.id,
                    status=sub.status,
                    deleted=sub.status in ENDED,
                ),
            ),
            customer.id,
        )


_ITEM_COLUMNS = (
    "price_id",
    "product_id",
    "product_name",
    "price_model",
    "billing_scheme",
    "usage_type",
    "unit_amount",
    "unit_amount_decimal",
    "tiers",
    "quantity",
    "interval",
    "interval_count",
    "currency",
    "meter_id",
    "current_period_start",
    "current_period_end",
)
_UPSERT_ITEM = f"""
INSERT INTO mirror.subscription_items AS i (stripe_id, subscription_id, site_id,
    {", ".join(_ITEM_COLUMNS)})
VALUES ($1, $2, $3, {", ".join(f"${n}" for n in range(4, 4 + len(_ITEM_COLUMNS)))})
ON CONFLICT (stripe_id) DO UPDATE SET
    subscription_id = excluded.subscription_id, site_id = excluded.site_id,
    {", ".join(f"{c} = excluded.{c}" for c in _ITEM_COLUMNS)}
WHERE (i.subscription_id, i.site_id, {", ".join(f"i.{c}" for c in _ITEM_COLUMNS)})
    IS DISTINCT FROM
      (excluded.subscription_id, excluded.site_id,
       {", ".join(f"excluded.{c}" for c in _ITEM_COLUMNS)})
RETURNING stripe_id
"""  # noqa: S608 - column names are the literals above


async def _write_items(
    ctx: SyncContext, sub_id: str, site: str, items: list[dict[str, Any]]
) -> bool:
    removed = await ctx.conn.fetch(
        "DELETE FROM mirror.subscription_items "
        "WHERE subscription_id = $1 AND NOT (stripe_id = ANY($2::text[])) RETURNING stripe_id",
        sub_id,
        [i["stripe_id"] for i in items],
    )
    changed = bool(removed)
    for item in items:
        row = await ctx.conn.fetchrow(
            _UPSERT_ITEM, item["stripe_id"], sub_id, site, *(item[c] for c in _ITEM_COLUMNS)
        )
        changed |= row is not None
    return changed


async def _write_usage(
    ctx: SyncContext,
    sub: stripe.Subscription,
    customer: customers.CustomerRef,
    items: list[dict[str, Any]],
) -> None:
    """Usage this period per metered item, from the meter's event summaries. Usage is
    not a change event of its own (it moves with every meter event); the portal reads it."""
    metered = [i for i in items if i["meter_id"] and i["current_period_start"]]
    await ctx.conn.execute(
        "DELETE FROM mirror.usage WHERE subscription_id = $1 "
        "AND NOT (subscription_item_id = ANY($2::text[]))",
        sub.id,
        [i["stripe_id"] for i in metered],
    )
    if sub.status in ENDED:
        metered = []
    for item in metered:
        meter_id = str(item["meter_id"])
        start: datetime = item["current_period_start"]
        end: datetime = item["current_period_end"]
        value = await _period_total(ctx, meter_id, customer.stripe_id, start, end)
        daily = await _daily(ctx, meter_id, customer.stripe_id, start, end)
        meter = await ctx.client.v1.billing.meters.retrieve_async(meter_id)
        await ctx.conn.execute(
            """
            INSERT INTO mirror.usage (subscription_item_id, subscription_id, site_id,
                customer_id, meter_id, meter_name, period_start, period_end, value, daily)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (subscription_item_id) DO UPDATE SET
                subscription_id = excluded.subscription_id, site_id = excluded.site_id,
                customer_id = excluded.customer_id, meter_id = excluded.meter_id,
                meter_name = excluded.meter_name, period_start = excluded.period_start,
                period_end = excluded.period_end, value = excluded.value,
                daily = excluded.daily, refreshed_at = now()
            """,
            item["stripe_id"],
            sub.id,
            customer.site_id,
            customer.id,
            meter_id,
            meter.display_name,
            start,
            end,
            value,
            daily,
        )


def _floor(t: datetime, unit: int) -> int:
    return int(t.timestamp()) // unit * unit


def _ceil(t: datetime, unit: int) -> int:
    return -(-int(t.timestamp()) // unit) * unit


async def _period_total(
    ctx: SyncContext, meter_id: str, customer: str, start: datetime, end: datetime
) -> Decimal:
    """The period's usage. Stripe takes summary bounds on minute boundaries only, so the
    period is widened to whole minutes (the seconds around a period's edge hold no usage
    that matters for a portal)."""
    summaries = await ctx.client.v1.billing.meters.event_summaries.list_async(
        meter_id,
        params={
            "customer": customer,
            "start_time": _floor(start, MINUTE),
            "end_time": _ceil(end, MINUTE),
            "limit": 100,
        },
    )
    return sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))


async def _daily(
    ctx: SyncContext, meter_id: str, customer: str, start: datetime, end: datetime
) -> list[dict[str, str]]:
    """Usage per UTC day of the period, up to today (days to come hold nothing yet), for
    the portal's bar chart. Grouped by day, Stripe wants both bounds on UTC midnights: the
    first day starts at the midnight before the period did."""
    last = min(_ceil(end, DAY), _ceil(datetime.now(UTC), DAY))
    # One page of summaries: a long (yearly) period shows its latest days.
    first = max(_floor(start, DAY), last - MAX_DAYS * DAY)
    if last <= first:
        return []
    summaries = await ctx.client.v1.billing.meters.event_summaries.list_async(
        meter_id,
        params={
            "customer": customer,
            "start_time": first,
            "end_time": last,
            "value_grouping_window": "day",
            "limit": 100,
        },
    )
    return [
        {
            "day": datetime.fromtimestamp(s.start_time, UTC).date().isoformat(),
            "value": str(Decimal(str(s.aggregated_value))),
        }
        for s in summaries.data
    ]
