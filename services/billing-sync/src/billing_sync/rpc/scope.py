"""Ownership first: every call names a (site, customer), and each object it touches must
be that customer's in the mirror, else ``RpcNotFound`` (whether the object exists
elsewhere or not at all is never told apart).

:func:`open_scope` also takes the per-customer advisory lock the worker and
reconciliation take (``worker.customer_lock``), so the refresh written after the Stripe
write can neither be overwritten by nor overwrite a concurrent webhook refresh. It waits
at most until the call's deadline (the server's ``lock_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe

from billfold.rpc import CallBase, RpcContext, RpcNotFound
from billing_sync import accounts
from billing_sync.dbtypes import Conn
from billing_sync.mirror.context import SyncContext
from billing_sync.rpc.deps import RpcDeps
from billing_sync.rpc.errors import stripe_errors
from billing_sync.worker import customer_lock


@dataclass(frozen=True)
class Scope:
    """The calling customer, resolved in the mirror, with a Stripe client for its site."""

    customer_id: str  # cu_…
    site_id: str
    stripe_customer: str  # cus_…
    default_payment_method: str | None
    sync: SyncContext

    @property
    def client(self) -> stripe.StripeClient:
        return self.sync.client

    @property
    def conn(self) -> Conn:
        return self.sync.conn


async def open_scope(call: CallBase, ctx: RpcContext, deps: RpcDeps) -> Scope:
    """The call's customer (``RpcNotFound`` unless it is a live customer of the call's
    site with a Stripe id), locked for this transaction."""
    row = await ctx.conn.fetchrow(
        "SELECT stripe_id, default_payment_method FROM mirror.customers "
        "WHERE id = $1 AND site_id = $2 AND deleted_at IS NULL AND stripe_id IS NOT NULL",
        call.customer_id,
        call.site_id,
    )
    if row is None:
        raise RpcNotFound()
    account = await accounts.get(ctx.conn, deps.box, call.site_id)
    if account is None:
        raise RpcNotFound()  # a customer mirrored for a site since unconfigured
    with stripe_errors():
        client = deps.gateway.client(account)
    await ctx.conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        customer_lock(account.account_ref, row["stripe_id"]),
    )
    return Scope(
        customer_id=call.customer_id,
        site_id=call.site_id,
        stripe_customer=row["stripe_id"],
        default_payment_method=row["default_payment_method"],
        sync=SyncContext(ctx.conn, account, client),
    )


async def _owned(scope: Scope, table: str, stripe_id: str, live: str) -> None:
    # `table` and `live` are literals of the callers below, never input.
    found = await scope.conn.fetchval(
        f"SELECT 1 FROM mirror.{table} WHERE stripe_id = $1 AND site_id = $2 "  # noqa: S608
        f"AND customer_id = $3 AND {live}",
        stripe_id,
        scope.site_id,
        scope.customer_id,
    )
    if found is None:
        raise RpcNotFound()


async def own_subscription(scope: Scope, subscription_id: str) -> None:
    await _owned(scope, "subscriptions", subscription_id, "true")


async def own_payment_method(scope: Scope, payment_method_id: str) -> None:
    await _owned(scope, "payment_methods", payment_method_id, "detached_at IS NULL")


async def own_invoice(scope: Scope, invoice_id: str) -> None:
    await _owned(scope, "invoices", invoice_id, "deleted_at IS NULL")


async def own_tax_id(scope: Scope, tax_id: str) -> None:
    found = await scope.conn.fetchval(
        "SELECT 1 FROM mirror.customers, jsonb_array_elements(tax_ids) AS t "
        "WHERE id = $1 AND t->>'id' = $2",
        scope.customer_id,
        tax_id,
    )
    if found is None:
        raise RpcNotFound()
