"""The replies' mirror objects, read back from the mirror after the handler wrote it
(the same rows, in the same transaction, that the portal's next page reads)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from billfold.rpc import JsonObject, RpcNotFound
from billing_sync.dbtypes import Conn


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def _row(record: asyncpg.Record, object_name: str) -> JsonObject:
    out: JsonObject = {"object": object_name}
    out.update({k: _json(v) for k, v in record.items()})
    return out


async def subscription(conn: Conn, stripe_id: str) -> JsonObject:
    row = await conn.fetchrow(
        "SELECT stripe_id AS id, customer_id, status, collection_method, currency, "
        "cancel_at_period_end, cancel_at, canceled_at, ended_at, cancellation_reason, "
        "cancellation_feedback, trial_start, trial_end, current_period_start, "
        "current_period_end, default_payment_method, next_charge_at, next_charge_amount, "
        "next_charge_currency, created, pause_collection_behavior, pause_collection_resumes_at, "
        "paused_reason, paused_at FROM mirror.subscriptions WHERE stripe_id = $1",
        stripe_id,
    )
    if row is None:
        raise RpcNotFound()
    items = await conn.fetch(
        "SELECT stripe_id AS id, price_id, product_name, price_model, unit_amount, quantity, "
        "interval, interval_count, currency FROM mirror.subscription_items "
        "WHERE subscription_id = $1 ORDER BY stripe_id",
        stripe_id,
    )
    result = _row(row, "subscription")
    result["items"] = [_row(i, "subscription_item") for i in items]
    return result


async def payment_methods(conn: Conn, customer_id: str) -> JsonObject:
    """The customer's cards: what a default change or a removal updates."""
    default = await conn.fetchval(
        "SELECT default_payment_method FROM mirror.customers WHERE id = $1", customer_id
    )
    rows = await conn.fetch(
        "SELECT stripe_id AS id, type, card_brand, card_last4, card_exp_month, card_exp_year, "
        "is_default, created FROM mirror.payment_methods "
        "WHERE customer_id = $1 AND detached_at IS NULL ORDER BY created DESC, stripe_id",
        customer_id,
    )
    return {
        "object": "payment_methods",
        "customer_id": customer_id,
        "default_payment_method": default,
        "data": [_row(r, "payment_method") for r in rows],
    }


async def customer(conn: Conn, customer_id: str) -> JsonObject:
    """The billing profile."""
    row = await conn.fetchrow(
        "SELECT id, external_id, email, name, phone, address, tax_ids, default_payment_method "
        "FROM mirror.customers WHERE id = $1",
        customer_id,
    )
    if row is None:
        raise RpcNotFound()
    return _row(row, "customer")


async def invoice(conn: Conn, stripe_id: str) -> JsonObject:
    row = await conn.fetchrow(
        "SELECT stripe_id AS id, customer_id, subscription_id, number, status, "
        "collection_method, created, due_date, total, amount_due, amount_paid, "
        "amount_remaining, currency, hosted_invoice_url, invoice_pdf, period_start, "
        "period_end FROM mirror.invoices WHERE stripe_id = $1",
        stripe_id,
    )
    if row is None:
        raise RpcNotFound()
    return _row(row, "invoice")
