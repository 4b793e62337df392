"""Invoices: what the Invoices section shows, with the subscription from ``parent``."""

from __future__ import annotations

import stripe

from billfold.events import InvoiceData, InvoiceUpdated
from billing_sync.mirror import customers
from billing_sync.mirror.context import SyncContext, is_missing, ref_id, ts


def subscription_of(invoice: stripe.Invoice) -> str | None:
    """The subscription an invoice bills: ``parent.subscription_details.subscription``
    (the top-level ``subscription`` field is gone from today's API)."""
    parent = invoice.parent
    if parent is None or parent.type != "subscription_details":
        return None
    details = parent.subscription_details
    return ref_id(details.subscription) if details is not None else None


async def _mark_deleted(ctx: SyncContext, stripe_id: str) -> None:
    row = await ctx.conn.fetchrow(
        "UPDATE mirror.invoices SET deleted_at = now(), updated_at = now() "
        "WHERE stripe_id = $1 AND deleted_at IS NULL RETURNING site_id, customer_id, status",
        stripe_id,
    )
    if row is not None:
        await ctx.emit(
            InvoiceUpdated(
                site_id=row["site_id"],
                data=InvoiceData(
                    invoice_id=stripe_id,
                    customer_id=row["customer_id"],
                    status=row["status"],
                    deleted=True,
                ),
            ),
            row["customer_id"],
        )


async def refresh(ctx: SyncContext, stripe_id: str) -> None:
    try:
        inv = await ctx.client.v1.invoices.retrieve_async(stripe_id)
    except stripe.InvalidRequestError as exc:
        if is_missing(exc):  # a deleted draft
            await _mark_deleted(ctx, stripe_id)
            return
        raise
    if getattr(inv, "deleted", False):
        await _mark_deleted(ctx, stripe_id)
        return
    await apply(ctx, inv)


async def apply(ctx: SyncContext, inv: stripe.Invoice) -> None:
    """Write an invoice fetched after the caller took its customer's lock."""
    customer_id = ref_id(inv.customer)
    if inv.id is None or customer_id is None:
        return
    customer = await customers.resolve(ctx, customer_id)
    if customer is None:
        return
    row = await ctx.conn.fetchrow(
        """
        INSERT INTO mirror.invoices AS v (stripe_id, site_id, customer_id, stripe_customer_id,
            subscription_id, number, status, collection_method, created, due_date, total,
            amount_due, amount_paid, amount_remaining, currency, hosted_invoice_url,
            invoice_pdf, period_start, period_end, deleted_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, NULL)
        ON CONFLICT (stripe_id) DO UPDATE SET
            site_id = excluded.site_id, customer_id = excluded.customer_id,
            stripe_customer_id = excluded.stripe_customer_id,
            subscription_id = excluded.subscription_id, number = excluded.number,
            status = excluded.status, collection_method = excluded.collection_method,
            created = excluded.created, due_date = excluded.due_date, total = excluded.total,
            amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,
            amount_remaining = excluded.amount_remaining, currency = excluded.currency,
            hosted_invoice_url = excluded.hosted_invoice_url,
            invoice_pdf = excluded.invoice_pdf, period_start = excluded.period_start,
            period_end = excluded.period_end, deleted_at = NULL,
            updated_at = now(), synced_at = now()
        WHERE (v.site_id, v.customer_id, v.subscription_id, v.number, v.status,
               v.collection_method, v.created, v.due_date, v.total, v.amount_due,
               v.amount_paid, v.amount_remaining, v.currency, v.hosted_invoice_url,
               v.invoice_pdf, v.period_start, v.period_end, v.deleted_at)
            IS DISTINCT FROM
              (excluded.site_id, excluded.customer_id, excluded.subscription_id,
               excluded.number, excluded.status, excluded.collection_method,
               excluded.created, excluded.due_date, excluded.total, excluded.amount_due,
               excluded.amount_paid, excluded.amount_remaining, excluded.currency,
               excluded.hosted_invoice_url, excluded.invoice_pdf, excluded.period_start,
               excluded.period_end, NULL::timestamptz)
        RETURNING stripe_id
        """,
        inv.id,
        customer.site_id,
        customer.id,
        customer.stripe_id,
        subscription_of(inv),
        inv.number,
        inv.status,
        inv.collection_method,
        ts(inv.created),
        ts(inv.due_date),
        inv.total,
        inv.amount_due,
        inv.amount_paid,
        inv.amount_remaining,
        inv.currency,
        inv.hosted_invoice_url,
        inv.invoice_pdf,
        ts(inv.period_start),
        ts(inv.period_end),
    )
    if row is not None:
        await ctx.emit(
            InvoiceUpdated(
                site_id=customer.site_id,
                data=InvoiceData(invoice_id=inv.id, customer_id=customer.id, status=inv.status),
            ),
            customer.id,
        )
