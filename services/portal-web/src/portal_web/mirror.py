"""Reads of billing-sync's ``mirror`` schema (portal-web never writes it).

Every query filters on the site AND the customer of the browser session: a customer
only ever sees their own rows, and another site's rows do not exist for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from portal_web.dbtypes import Executor

MAX_SUBSCRIPTIONS = 50


@dataclass(frozen=True, slots=True)
class Item:
    product_name: str | None
    price_model: str  # flat, per_unit, graduated, volume, metered
    unit_amount: Decimal | None  # smallest currency unit, possibly fractional
    tiers: list[dict[str, Any]]
    quantity: int
    interval: str | None
    interval_count: int
    currency: str | None


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    status: str
    currency: str | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    next_charge_at: datetime | None
    next_charge_amount: int | None
    next_charge_currency: str | None
    items: list[Item]


_SUBSCRIPTIONS = f"""
SELECT s.stripe_id, s.status, s.currency, s.cancel_at_period_end, s.cancel_at,
       s.canceled_at, s.ended_at, s.trial_end, s.current_period_start,
       s.current_period_end, s.next_charge_at, s.next_charge_amount, s.next_charge_currency,
       COALESCE(
         (SELECT jsonb_agg(jsonb_build_object(
              'product_name', i.product_name, 'price_model', i.price_model,
              'unit_amount', i.unit_amount, 'unit_amount_decimal', i.unit_amount_decimal,
              'tiers', i.tiers, 'quantity', i.quantity, 'interval', i.interval,
              'interval_count', i.interval_count, 'currency', i.currency)
              ORDER BY i.stripe_id)
          FROM mirror.subscription_items i
          WHERE i.subscription_id = s.stripe_id AND i.site_id = s.site_id),
         '[]'::jsonb) AS items
FROM mirror.subscriptions s
WHERE s.site_id = $1 AND s.customer_id = $2
ORDER BY (s.status IN ('canceled', 'incomplete_expired')), s.created DESC NULLS LAST,
         s.stripe_id
LIMIT {MAX_SUBSCRIPTIONS}
"""  # noqa: S608 - a constant


def _item(v: dict[str, Any]) -> Item:
    decimal = v.get("unit_amount_decimal")
    amount = (
        Decimal(decimal)
        if decimal
        else (Decimal(v["unit_amount"]) if v.get("unit_amount") is not None else None)
    )
    return Item(
        product_name=v.get("product_name"),
        price_model=v.get("price_model") or "flat",
        unit_amount=amount,
        tiers=list(v.get("tiers") or []),
        quantity=int(v.get("quantity") or 1),
        interval=v.get("interval"),
        interval_count=int(v.get("interval_count") or 1),
        currency=v.get("currency"),
    )


async def subscriptions(db: Executor, site_id: str, customer_id: str) -> list[Subscription]:
    rows = await db.fetch(_SUBSCRIPTIONS, site_id, customer_id)
    return [
        Subscription(
            id=r["stripe_id"],
            status=r["status"],
            currency=r["currency"],
            cancel_at_period_end=r["cancel_at_period_end"],
            cancel_at=r["cancel_at"],
            canceled_at=r["canceled_at"],
            ended_at=r["ended_at"],
            trial_end=r["trial_end"],
            current_period_start=r["current_period_start"],
            current_period_end=r["current_period_end"],
            next_charge_at=r["next_charge_at"],
            next_charge_amount=r["next_charge_amount"],
            next_charge_currency=r["next_charge_currency"],
            items=[_item(v) for v in r["items"]],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    number: str | None
    status: str | None
    created: datetime | None
    due_date: datetime | None
    total: int | None
    amount_remaining: int | None
    currency: str | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None


@dataclass(frozen=True, slots=True)
class InvoicePage:
    invoices: list[Invoice]
    page: int
    pages: int
    total: int


# Drafts are not the customer's business yet; deleted drafts never were.
_INVOICES = """
SELECT stripe_id, number, status, created, due_date, total, amount_remaining, currency,
       hosted_invoice_url, invoice_pdf, count(*) OVER () AS total_count
FROM mirror.invoices
WHERE site_id = $1 AND customer_id = $2 AND deleted_at IS NULL AND status <> 'draft'
ORDER BY created DESC NULLS LAST, stripe_id DESC
LIMIT $3 OFFSET $4
"""
_COUNT = """
SELECT count(*) FROM mirror.invoices
WHERE site_id = $1 AND customer_id = $2 AND deleted_at IS NULL AND status <> 'draft'
"""


async def invoices(
    db: Executor, site_id: str, customer_id: str, *, page: int, per_page: int
) -> InvoicePage:
    rows = await db.fetch(_INVOICES, site_id, customer_id, per_page, (page - 1) * per_page)
    total = rows[0]["total_count"] if rows else await db.fetchval(_COUNT, site_id, customer_id)
    pages = max(1, -(-int(total) // per_page))
    return InvoicePage(
        invoices=[
            Invoice(
                id=r["stripe_id"],
                number=r["number"],
                status=r["status"],
                created=r["created"],
                due_date=r["due_date"],
                total=r["total"],
                amount_remaining=r["amount_remaining"],
                currency=r["currency"],
                hosted_invoice_url=r["hosted_invoice_url"],
                invoice_pdf=r["invoice_pdf"],
            )
            for r in rows
        ],
        page=page,
        pages=pages,
        total=int(total),
    )
