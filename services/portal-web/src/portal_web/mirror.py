"""Reads of billing-sync's ``mirror`` schema (portal-web never writes it).

Every query filters on the site AND the customer of the browser session: a customer
only ever sees their own rows, and another site's rows do not exist for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

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
    collection_method: str | None = None
    # Payment collection paused (Stripe's ``pause_collection``; the status stays as it is):
    # keep_as_draft, mark_uncollectible or void, and when it resumes by itself (None: when
    # resumed). Not the ``paused`` status, which a trial ended without a card leads to.
    pause_collection: str | None = None
    pause_collection_resumes_at: datetime | None = None
    # Status ``paused``: why (pause_requested, trial_end_without_payment_method) and since.
    paused_reason: str | None = None
    paused_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.status not in ("canceled", "incomplete_expired")


_SUBSCRIPTIONS = f"""
SELECT s.stripe_id, s.status, s.currency, s.cancel_at_period_end, s.cancel_at,
       s.canceled_at, s.ended_at, s.trial_end, s.current_period_start,
       s.current_period_end, s.next_charge_at, s.next_charge_amount, s.next_charge_currency,
       s.collection_method, s.pause_collection_behavior, s.pause_collection_resumes_at,
       s.paused_reason, s.paused_at,
       COALESCE(
         (SELECT jsonb_agg(jsonb_build_object(
              'product_name', i.product_name, 'price_model', i.price_model,
              'unit_amount', i.unit_amount, 'unit_amount_decimal', i.unit_amount_decimal,
              'tiers', i.tiers, 'quantity', i.quantity, 'interval', i.interval,
              'interval_count', i.interval_count, 'currency', i.currency)
              ORDER BY i.stripe_id)
          FROM mirror.subscription_items i
          WHERE i.subscription_id = s.stripe_id AND i.site_id = s.site_id),
         '[]'::jsonb)::text AS items
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


# The rows as fetched. Records hash by value (the items are JSON text, not decoded), so
# they are the key of whatever is made from them: pages memoize on them (pages.PageMemo).
SubscriptionRows = tuple[asyncpg.Record, ...]


async def subscription_rows(db: Executor, site_id: str, customer_id: str) -> SubscriptionRows:
    return tuple(await db.fetch(_SUBSCRIPTIONS, site_id, customer_id))


def decode_subscriptions(rows: SubscriptionRows) -> list[Subscription]:
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
            items=[_item(v) for v in json.loads(r["items"])],
            collection_method=r["collection_method"],
            pause_collection=r["pause_collection_behavior"],
            pause_collection_resumes_at=r["pause_collection_resumes_at"],
            paused_reason=r["paused_reason"],
            paused_at=r["paused_at"],
        )
        for r in rows
    ]


async def subscriptions(db: Executor, site_id: str, customer_id: str) -> list[Subscription]:
    return decode_subscriptions(await subscription_rows(db, site_id, customer_id))


async def subscription(
    db: Executor, site_id: str, customer_id: str, subscription_id: str
) -> Subscription | None:
    """One of the customer's subscriptions (None: not theirs, or not there)."""
    for sub in await subscriptions(db, site_id, customer_id):
        if sub.id == subscription_id:
            return sub
    return None


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


_INVOICE = """
SELECT stripe_id, number, status, created, due_date, total, amount_remaining, currency,
       hosted_invoice_url, invoice_pdf
FROM mirror.invoices
WHERE site_id = $1 AND customer_id = $2 AND stripe_id = $3 AND deleted_at IS NULL
"""


async def invoice(db: Executor, site_id: str, customer_id: str, invoice_id: str) -> Invoice | None:
    r = await db.fetchrow(_INVOICE, site_id, customer_id, invoice_id)
    return _invoice(r) if r is not None else None


def _invoice(r: Any) -> Invoice:
    return Invoice(
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


async def invoices(
    db: Executor, site_id: str, customer_id: str, *, page: int, per_page: int
) -> InvoicePage:
    rows = await db.fetch(_INVOICES, site_id, customer_id, per_page, (page - 1) * per_page)
    total = rows[0]["total_count"] if rows else await db.fetchval(_COUNT, site_id, customer_id)
    pages = max(1, -(-int(total) // per_page))
    return InvoicePage(
        invoices=[_invoice(r) for r in rows],
        page=page,
        pages=pages,
        total=int(total),
    )


# --- Payment methods, usage, profile ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    id: str
    type: str
    card_brand: str | None
    card_last4: str | None
    card_exp_month: int | None
    card_exp_year: int | None
    is_default: bool


_PAYMENT_METHODS = """
SELECT pm.stripe_id, pm.type, pm.card_brand, pm.card_last4, pm.card_exp_month,
       pm.card_exp_year,
       (pm.is_default OR pm.stripe_id IS NOT DISTINCT FROM c.default_payment_method) AS dflt
FROM mirror.payment_methods pm
JOIN mirror.customers c ON c.id = pm.customer_id AND c.site_id = pm.site_id
WHERE pm.site_id = $1 AND pm.customer_id = $2 AND pm.detached_at IS NULL
ORDER BY dflt DESC, pm.created DESC NULLS LAST, pm.stripe_id
LIMIT 50
"""


async def payment_methods(db: Executor, site_id: str, customer_id: str) -> list[PaymentMethod]:
    rows = await db.fetch(_PAYMENT_METHODS, site_id, customer_id)
    return [
        PaymentMethod(
            id=r["stripe_id"],
            type=r["type"],
            card_brand=r["card_brand"],
            card_last4=r["card_last4"],
            card_exp_month=r["card_exp_month"],
            card_exp_year=r["card_exp_year"],
            is_default=bool(r["dflt"]),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Usage:
    """``daily``: (UTC day, usage that day) for the period's days so far, oldest first."""

    meter_name: str | None
    value: Decimal
    period_start: datetime
    period_end: datetime
    daily: tuple[tuple[date, Decimal], ...] = ()


def _daily(raw: str | None) -> tuple[tuple[date, Decimal], ...]:
    out = []
    for d in json.loads(raw or "[]"):
        try:
            out.append((date.fromisoformat(str(d["day"])), Decimal(str(d["value"]))))
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue  # a malformed day is left out of the chart, never a failed page
    return tuple(out)


_USAGE = """
SELECT meter_name, value, period_start, period_end, daily::text AS daily FROM mirror.usage
WHERE site_id = $1 AND customer_id = $2
ORDER BY meter_name NULLS LAST, subscription_item_id
LIMIT 50
"""


async def usage(db: Executor, site_id: str, customer_id: str) -> list[Usage]:
    rows = await db.fetch(_USAGE, site_id, customer_id)
    return [
        Usage(
            meter_name=r["meter_name"],
            value=Decimal(r["value"]),
            period_start=r["period_start"],
            period_end=r["period_end"],
            daily=_daily(r["daily"]),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Profile:
    """``tax_ids``: Stripe's tax id objects as mirrored (``id``, ``type``, ``value``)."""

    name: str | None
    email: str | None
    phone: str | None
    address: dict[str, Any] | None
    tax_ids: list[dict[str, Any]]


_PROFILE = """
SELECT name, email, phone, address, tax_ids FROM mirror.customers
WHERE site_id = $1 AND id = $2 AND deleted_at IS NULL
"""


async def profile(db: Executor, site_id: str, customer_id: str) -> Profile | None:
    r = await db.fetchrow(_PROFILE, site_id, customer_id)
    if r is None:
        return None
    return Profile(
        name=r["name"],
        email=r["email"],
        phone=r["phone"],
        address=r["address"] if isinstance(r["address"], dict) else None,
        tax_ids=[t for t in (r["tax_ids"] or []) if isinstance(t, dict)],
    )
