"""Customers: ``mirror.customers`` (the table session-api reads) from Stripe's customer."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import stripe

from billfold.events import CustomerData, CustomerUpdated, PaymentMethodData, PaymentMethodUpdated
from billfold.logs import get_logger
from billing_sync import accounts
from billing_sync.mirror.context import SyncContext, is_missing, ref_id

log = get_logger("billing_sync.mirror.customers")

#: Stripe metadata key holding the tenant's own id for a customer (DESIGN: Customer).
EXTERNAL_ID_KEY = "external_id"


@dataclass(frozen=True)
class CustomerRef:
    id: str  # Billfold's cu_…
    site_id: str
    stripe_id: str
    default_payment_method: str | None
    deleted: bool = False


def new_customer_id() -> str:
    return f"cu_{secrets.token_hex(12)}"


async def _sites(ctx: SyncContext) -> list[str]:
    return [site for site, _ in await ctx.sites()] or [ctx.account.site_id]


async def find(ctx: SyncContext, stripe_id: str) -> CustomerRef | None:
    """The mirrored customer with this Stripe id in any site of this Stripe account."""
    row = await ctx.conn.fetchrow(
        "SELECT id, site_id, stripe_id, default_payment_method, deleted_at FROM mirror.customers "
        "WHERE stripe_id = $1 AND site_id = ANY($2::text[])",
        stripe_id,
        await _sites(ctx),
    )
    if row is None:
        return None
    return CustomerRef(
        row["id"],
        row["site_id"],
        row["stripe_id"],
        row["default_payment_method"],
        deleted=row["deleted_at"] is not None,
    )


async def resolve(ctx: SyncContext, stripe_id: str) -> CustomerRef | None:
    """The customer an object belongs to: mirrored already, or fetched and mirrored now
    (events of a new customer's subscription may arrive before the customer's own).
    None if the customer was deleted before it was ever mirrored: nobody can open a
    portal for it, so its objects are not mirrored either."""
    found = await find(ctx, stripe_id)
    if found is not None:
        return found
    return await refresh(ctx, stripe_id)


async def _mark_deleted(ctx: SyncContext, stripe_id: str) -> CustomerRef | None:
    row = await ctx.conn.fetchrow(
        "UPDATE mirror.customers SET deleted_at = now(), updated_at = now() "
        "WHERE stripe_id = $1 AND site_id = ANY($2::text[]) AND deleted_at IS NULL "
        "RETURNING id, site_id, external_id, default_payment_method",
        stripe_id,
        await _sites(ctx),
    )
    if row is not None:
        await ctx.emit(
            CustomerUpdated(
                site_id=row["site_id"],
                data=CustomerData(
                    customer_id=row["id"],
                    stripe_id=stripe_id,
                    external_id=row["external_id"],
                    deleted=True,
                ),
            ),
            row["id"],
        )
        return CustomerRef(
            row["id"], row["site_id"], stripe_id, row["default_payment_method"], deleted=True
        )
    return await find(ctx, stripe_id)


#: Stripe embeds at most this many tax ids in a customer fetched with ``expand[]=tax_ids``;
#: a customer with more (``has_more``) has the rest listed page by page.
TAX_IDS_PAGE = 100


async def _fetch(ctx: SyncContext, stripe_id: str) -> dict[str, Any]:
    """The customer as plain JSON, its tax ids included: ONE request to Stripe (the
    includable ``tax_ids`` field, ``expand[]=tax_ids``) instead of a retrieve and a list.

    Through the library's ``raw_request_async``: the same requestor, retries, API version,
    ``Stripe-Account`` and error mapping (a missing customer still raises
    ``InvalidRequestError``) as ``customers.retrieve_async``, without building a
    ``StripeObject`` tree of the answer, which cost more CPU than everything else the
    refresh does (docs/PERFORMANCE.md). The fields read below are the API's JSON names."""
    response = await ctx.client.raw_request_async(
        "get", f"/v1/customers/{quote(stripe_id, safe='')}", expand=["tax_ids"]
    )
    customer: dict[str, Any] = response.data
    if customer.get("deleted"):
        return customer
    tax_ids = customer.get("tax_ids") or {}
    data = list(tax_ids.get("data") or [])
    while tax_ids.get("has_more") and data:
        tax_ids = (
            await ctx.client.raw_request_async(
                "get",
                f"/v1/customers/{quote(stripe_id, safe='')}/tax_ids",
                limit=TAX_IDS_PAGE,
                starting_after=data[-1]["id"],
            )
        ).data
        data.extend(tax_ids.get("data") or [])
    customer["tax_ids"] = {"object": "list", "data": data, "has_more": False}
    return customer


async def refresh(ctx: SyncContext, stripe_id: str) -> CustomerRef | None:
    """Fetch the customer and write it; None if Stripe has no such customer at all."""
    try:
        customer = await _fetch(ctx, stripe_id)
    except stripe.InvalidRequestError as exc:
        if is_missing(exc):
            return await _mark_deleted(ctx, stripe_id)
        raise
    if customer.get("deleted"):
        return await _mark_deleted(ctx, stripe_id)
    metadata: dict[str, Any] = customer.get("metadata") or {}
    site = accounts.owner_site(
        await ctx.sites(), ctx.account, metadata.get(accounts.SITE_METADATA_KEY)
    )
    default_pm = ref_id((customer.get("invoice_settings") or {}).get("default_payment_method"))
    fields = {
        "external_id": metadata.get(EXTERNAL_ID_KEY) or None,
        "email": customer.get("email"),
        "name": customer.get("name"),
        "phone": customer.get("phone"),
        "address": customer.get("address"),
        "tax_ids": [
            {"id": t["id"], "type": t["type"], "value": t["value"], "country": t.get("country")}
            for t in customer["tax_ids"]["data"]
        ],
        "default_payment_method": default_pm,
    }
    return await _write(ctx, stripe_id, site, fields)


async def _write(
    ctx: SyncContext, stripe_id: str, site: str, fields: dict[str, Any]
) -> CustomerRef:
    conn = ctx.conn
    existing = await find(ctx, stripe_id)
    if existing is None and fields["external_id"]:
        # A customer the tenant (or the demo) created before it existed in Stripe:
        # same site and external id, no Stripe id yet. Adopt it rather than duplicate.
        cid = await conn.fetchval(
            "SELECT id FROM mirror.customers "
            "WHERE site_id = $1 AND external_id = $2 AND stripe_id IS NULL",
            site,
            fields["external_id"],
        )
        if cid is not None:
            await conn.execute(
                "UPDATE mirror.customers SET stripe_id = $2 WHERE id = $1", cid, stripe_id
            )
            existing = CustomerRef(cid, site, stripe_id, None)
    cid = existing.id if existing is not None else new_customer_id()
    if fields["external_id"]:
        # A deleted customer gives its external id up to a live one (a tenant deleted
        # and re-created a customer, or a fake Stripe restarted empty).
        await conn.execute(
            "UPDATE mirror.customers SET external_id = NULL, updated_at = now() "
            "WHERE site_id = $1 AND external_id = $2 AND id <> $3 AND deleted_at IS NOT NULL",
            site,
            fields["external_id"],
            cid,
        )
        taken = await _external_id_holder(ctx, site, fields["external_id"], cid)
        if taken is not None and await _gone(ctx, taken):
            # The holder was deleted at Stripe, but its own group (another customer,
            # processed concurrently) has not committed that yet: record it now (the same
            # idempotent write), so the live customer is not refused the id.
            await _mark_deleted(ctx, taken)
            await conn.execute(
                "UPDATE mirror.customers SET external_id = NULL, updated_at = now() "
                "WHERE site_id = $1 AND stripe_id = $2 AND deleted_at IS NOT NULL",
                site,
                taken,
            )
            taken = await _external_id_holder(ctx, site, fields["external_id"], cid)
        if taken is not None:
            # Two Stripe customers claim one external id in a site: the first keeps it.
            log.warning("customer_external_id_taken", site=site, stripe_customer=stripe_id)
            fields = {**fields, "external_id": None}
    row = await conn.fetchrow(
        """
        INSERT INTO mirror.customers AS c (id, site_id, stripe_id, external_id, email, name,
            phone, address, tax_ids, default_payment_method, deleted_at, synced_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, now())
        ON CONFLICT (id) DO UPDATE SET
            site_id = excluded.site_id, external_id = excluded.external_id,
            email = excluded.email, name = excluded.name, phone = excluded.phone,
            address = excluded.address, tax_ids = excluded.tax_ids,
            default_payment_method = excluded.default_payment_method,
            deleted_at = NULL, updated_at = now(), synced_at = now()
        WHERE (c.site_id, c.external_id, c.email, c.name, c.phone, c.address, c.tax_ids,
               c.default_payment_method, c.deleted_at)
            IS DISTINCT FROM
              (excluded.site_id, excluded.external_id, excluded.email, excluded.name,
               excluded.phone, excluded.address, excluded.tax_ids,
               excluded.default_payment_method, NULL::timestamptz)
        RETURNING id
        """,
        cid,
        site,
        stripe_id,
        fields["external_id"],
        fields["email"],
        fields["name"],
        fields["phone"],
        fields["address"],
        fields["tax_ids"],
        fields["default_payment_method"],
    )
    ref = CustomerRef(cid, site, stripe_id, fields["default_payment_method"])
    if row is None:
        return ref  # nothing shown changed: no event
    if existing is not None and existing.site_id != site:
        # metadata billfold_site moved the customer to another site of the same account.
        for table in ("subscriptions", "subscription_items", "invoices", "payment_methods"):
            await _move_children(ctx, table, cid, site)
    await ctx.emit(
        CustomerUpdated(
            site_id=site,
            data=CustomerData(
                customer_id=cid, stripe_id=stripe_id, external_id=fields["external_id"]
            ),
        ),
        cid,
    )
    if existing is not None and existing.default_payment_method != ref.default_payment_method:
        # Otherwise the flags agree already: every payment method write sets its flag from
        # this row's default, under the same customer lock, and a new customer id has no
        # payment methods yet. One round trip less per customer change.
        await _default_flags(ctx, ref)
    return ref


async def _external_id_holder(
    ctx: SyncContext, site: str, external_id: str, cid: str
) -> str | None:
    """The Stripe id of another customer of the site holding ``external_id`` (or "" for
    one not in Stripe yet), None if nobody does."""
    row = await ctx.conn.fetchrow(
        "SELECT stripe_id FROM mirror.customers "
        "WHERE site_id = $1 AND external_id = $2 AND id <> $3",
        site,
        external_id,
        cid,
    )
    return None if row is None else (row["stripe_id"] or "")


async def _gone(ctx: SyncContext, stripe_id: str) -> bool:
    """Stripe has deleted this customer (or never had it)."""
    if not stripe_id:
        return False
    try:
        customer = await ctx.client.v1.customers.retrieve_async(stripe_id)
    except stripe.InvalidRequestError as exc:
        if is_missing(exc):
            return True
        raise
    return bool(getattr(customer, "deleted", False))


async def _move_children(ctx: SyncContext, table: str, customer_id: str, site: str) -> None:
    if table == "subscription_items":
        await ctx.conn.execute(
            "UPDATE mirror.subscription_items SET site_id = $2 WHERE subscription_id IN "
            "(SELECT stripe_id FROM mirror.subscriptions WHERE customer_id = $1)",
            customer_id,
            site,
        )
        return
    # `table` is one of four literals above, never input.
    await ctx.conn.execute(
        f"UPDATE mirror.{table} SET site_id = $2 WHERE customer_id = $1",  # noqa: S608
        customer_id,
        site,
    )


async def _default_flags(ctx: SyncContext, customer: CustomerRef) -> None:
    """Keep ``payment_methods.is_default`` equal to the customer's default; each flip is a
    payment method change."""
    rows = await ctx.conn.fetch(
        """
        UPDATE mirror.payment_methods
        SET is_default = (stripe_id IS NOT DISTINCT FROM $2), updated_at = now()
        WHERE customer_id = $1 AND is_default IS DISTINCT FROM (stripe_id IS NOT DISTINCT FROM $2)
        RETURNING stripe_id, is_default, detached_at
        """,
        customer.id,
        customer.default_payment_method,
    )
    for r in rows:
        await ctx.emit(
            PaymentMethodUpdated(
                site_id=customer.site_id,
                data=PaymentMethodData(
                    payment_method_id=r["stripe_id"],
                    customer_id=customer.id,
                    is_default=r["is_default"],
                    deleted=r["detached_at"] is not None,
                ),
            ),
            customer.id,
        )
