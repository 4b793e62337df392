"""Compare the mirror with the fake Stripe's current state, field by field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else value.id


async def _all(page: Any) -> list[Any]:
    return [obj async for obj in page.auto_paging_iter()]


async def mismatches(
    pool: asyncpg.Pool, api: stripe.StripeClient, site_id: str, deleted_customers: set[str]
) -> list[str]:
    """Every difference between the mirror of ``site_id`` and Stripe; empty when equal."""
    out: list[str] = []

    def check(what: str, mirror: Any, stripe_value: Any) -> None:
        if mirror != stripe_value:
            out.append(f"{what}: mirror {mirror!r} != stripe {stripe_value!r}")

    customers = await _all(await api.v1.customers.list_async(params={"limit": 100}))
    rows = {
        r["stripe_id"]: r
        for r in await pool.fetch("SELECT * FROM mirror.customers WHERE site_id = $1", site_id)
    }
    # A customer deleted before its events were processed may never have been mirrored.
    check("customer ids", set(rows) - deleted_customers, {c.id for c in customers})
    for c in customers:
        row = rows.get(c.id)
        if row is None:
            continue
        tax = await api.v1.customers.tax_ids.list_async(c.id, params={"limit": 100})
        for field, value in (
            ("email", c.email),
            ("name", c.name),
            ("phone", c.phone),
            ("external_id", c.metadata.to_dict().get("external_id") if c.metadata else None),
            ("address", c.address.to_dict() if c.address else None),
            ("default_payment_method", _id(c.invoice_settings.default_payment_method)),
            ("tax_ids", sorted(t.value for t in tax.data)),
            ("deleted_at", None),
        ):
            mirror = row[field]
            if field == "tax_ids":
                mirror = sorted(t["value"] for t in mirror)
            check(f"customer {c.id} {field}", mirror, value)
    for gone in deleted_customers:
        if gone in rows:
            check(f"customer {gone} deleted", rows[gone]["deleted_at"] is not None, True)

    subs = await _all(
        await api.v1.subscriptions.list_async(
            params={"status": "all", "limit": 100, "expand": ["data.items.data.price.product"]}
        )
    )
    sub_rows = {
        r["stripe_id"]: r
        for r in await pool.fetch("SELECT * FROM mirror.subscriptions WHERE site_id = $1", site_id)
    }
    # Objects of a customer deleted before it was mirrored are not mirrored (no portal).
    never = deleted_customers - set(rows)
    subs = [s for s in subs if _id(s.customer) not in never]
    check("subscription ids", set(sub_rows), {s.id for s in subs})
    for s in subs:
        row = sub_rows.get(s.id)
        if row is None:
            continue
        items = s["items"].data
        for field, value in (
            ("status", s.status),
            ("collection_method", s.collection_method),
            ("cancel_at_period_end", s.cancel_at_period_end),
            ("cancel_at", _ts(s.cancel_at)),
            ("canceled_at", _ts(s.canceled_at)),
            ("trial_end", _ts(s.trial_end)),
            ("current_period_start", _ts(min(i.current_period_start for i in items))),
            ("current_period_end", _ts(max(i.current_period_end for i in items))),
            (
                "cancellation_reason",
                s.cancellation_details.reason if s.cancellation_details else None,
            ),
        ):
            check(f"subscription {s.id} {field}", row[field], value)
        if s.status in ("active", "trialing", "past_due"):
            try:
                preview = await api.v1.invoices.create_preview_async(params={"subscription": s.id})
                check(
                    f"subscription {s.id} next_charge_amount",
                    row["next_charge_amount"],
                    preview.amount_due,
                )
            except stripe.InvalidRequestError:
                check(f"subscription {s.id} next_charge_amount", row["next_charge_amount"], None)
        item_rows = {
            r["stripe_id"]: r
            for r in await pool.fetch(
                "SELECT * FROM mirror.subscription_items WHERE subscription_id = $1", s.id
            )
        }
        check(f"subscription {s.id} items", set(item_rows), {i.id for i in items})
        for i in items:
            irow = item_rows.get(i.id)
            if irow is None:
                continue
            check(f"item {i.id} price", irow["price_id"], i.price.id)
            check(f"item {i.id} quantity", irow["quantity"], i.quantity)
            check(f"item {i.id} product_name", irow["product_name"], i.price.product.name)
            check(f"item {i.id} interval", irow["interval"], i.price.recurring.interval)
            check(f"item {i.id} currency", irow["currency"], i.price.currency)

    invoices = await _all(await api.v1.invoices.list_async(params={"limit": 100}))
    inv_rows = {
        r["stripe_id"]: r
        for r in await pool.fetch(
            "SELECT * FROM mirror.invoices WHERE site_id = $1 AND deleted_at IS NULL", site_id
        )
    }
    invoices = [i for i in invoices if _id(i.customer) not in never]
    check("invoice ids", set(inv_rows), {i.id for i in invoices})
    for inv in invoices:
        row = inv_rows.get(inv.id)
        if row is None:
            continue
        parent_sub = None
        if inv.parent and inv.parent.subscription_details:
            parent_sub = _id(inv.parent.subscription_details.subscription)
        for field, value in (
            ("number", inv.number),
            ("status", inv.status),
            ("total", inv.total),
            ("amount_due", inv.amount_due),
            ("amount_paid", inv.amount_paid),
            ("amount_remaining", inv.amount_remaining),
            ("currency", inv.currency),
            ("created", _ts(inv.created)),
            ("due_date", _ts(inv.due_date)),
            ("hosted_invoice_url", inv.hosted_invoice_url),
            ("invoice_pdf", inv.invoice_pdf),
            ("subscription_id", parent_sub),
        ):
            check(f"invoice {inv.id} {field}", row[field], value)

    pm_rows = {
        r["stripe_id"]: r
        for r in await pool.fetch(
            "SELECT * FROM mirror.payment_methods WHERE site_id = $1", site_id
        )
    }
    attached: set[str] = set()
    for c in customers:
        default = _id(c.invoice_settings.default_payment_method)
        for pm in await _all(
            await api.v1.customers.payment_methods.list_async(c.id, params={"limit": 100})
        ):
            attached.add(pm.id)
            row = pm_rows.get(pm.id)
            if row is None:
                out.append(f"payment method {pm.id} missing")
                continue
            for field, value in (
                ("type", pm.type),
                ("card_brand", pm.card.brand),
                ("card_last4", pm.card.last4),
                ("card_exp_month", pm.card.exp_month),
                ("card_exp_year", pm.card.exp_year),
                ("is_default", pm.id == default),
                ("detached_at", None),
            ):
                check(f"payment method {pm.id} {field}", row[field], value)
    for pm_id, row in pm_rows.items():
        if (
            pm_id not in attached
            and row["detached_at"] is None
            and row["stripe_customer_id"] not in deleted_customers
        ):
            out.append(f"payment method {pm_id} detached in Stripe, not in the mirror")
    return out
