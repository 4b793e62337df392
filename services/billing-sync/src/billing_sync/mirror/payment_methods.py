"""Payment methods: type, card brand/last4/expiry, and whether it is the default."""

from __future__ import annotations

import stripe

from billfold.events import PaymentMethodData, PaymentMethodUpdated
from billing_sync.mirror import customers
from billing_sync.mirror.context import SyncContext, is_missing, ref_id, ts


async def _mark_detached(ctx: SyncContext, stripe_id: str) -> None:
    row = await ctx.conn.fetchrow(
        "UPDATE mirror.payment_methods SET detached_at = now(), is_default = false, "
        "updated_at = now() WHERE stripe_id = $1 AND detached_at IS NULL "
        "RETURNING site_id, customer_id",
        stripe_id,
    )
    if row is not None:
        await ctx.emit(
            PaymentMethodUpdated(
                site_id=row["site_id"],
                data=PaymentMethodData(
                    payment_method_id=stripe_id, customer_id=row["customer_id"], deleted=True
                ),
            ),
            row["customer_id"],
        )


async def refresh(ctx: SyncContext, stripe_id: str) -> None:
    try:
        pm = await ctx.client.v1.payment_methods.retrieve_async(stripe_id)
    except stripe.InvalidRequestError as exc:
        if is_missing(exc):
            await _mark_detached(ctx, stripe_id)
            return
        raise
    await apply(ctx, pm)


async def apply(ctx: SyncContext, pm: stripe.PaymentMethod) -> None:
    """Write a payment method fetched after the caller took its customer's lock."""
    stripe_customer = ref_id(pm.customer)
    if stripe_customer is None:  # detached (or never attached): not the customer's any more
        await _mark_detached(ctx, pm.id)
        return
    customer = await customers.resolve(ctx, stripe_customer)
    if customer is None:
        return
    card = pm.card
    is_default = customer.default_payment_method == pm.id
    row = await ctx.conn.fetchrow(
        """
        INSERT INTO mirror.payment_methods AS p (stripe_id, site_id, customer_id,
            stripe_customer_id, type, card_brand, card_last4, card_exp_month, card_exp_year,
            is_default, created, detached_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)
        ON CONFLICT (stripe_id) DO UPDATE SET
            site_id = excluded.site_id, customer_id = excluded.customer_id,
            stripe_customer_id = excluded.stripe_customer_id, type = excluded.type,
            card_brand = excluded.card_brand, card_last4 = excluded.card_last4,
            card_exp_month = excluded.card_exp_month, card_exp_year = excluded.card_exp_year,
            is_default = excluded.is_default, created = excluded.created, detached_at = NULL,
            updated_at = now(), synced_at = now()
        WHERE (p.site_id, p.customer_id, p.type, p.card_brand, p.card_last4,
               p.card_exp_month, p.card_exp_year, p.is_default, p.detached_at)
            IS DISTINCT FROM
              (excluded.site_id, excluded.customer_id, excluded.type, excluded.card_brand,
               excluded.card_last4, excluded.card_exp_month, excluded.card_exp_year,
               excluded.is_default, NULL::timestamptz)
        RETURNING stripe_id
        """,
        pm.id,
        customer.site_id,
        customer.id,
        customer.stripe_id,
        pm.type,
        card.brand if card else None,
        card.last4 if card else None,
        card.exp_month if card else None,
        card.exp_year if card else None,
        is_default,
        ts(pm.created),
    )
    if row is not None:
        await ctx.emit(
            PaymentMethodUpdated(
                site_id=customer.site_id,
                data=PaymentMethodData(
                    payment_method_id=pm.id, customer_id=customer.id, is_default=is_default
                ),
            ),
            customer.id,
        )
