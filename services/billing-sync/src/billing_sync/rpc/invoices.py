"""Paying an open invoice with the customer's default card."""

from __future__ import annotations

import stripe

from billfold.rpc import JsonObject, PayInvoice, RpcContext, RpcInvalidRequest
from billing_sync.mirror import invoices as mirror
from billing_sync.rpc import results
from billing_sync.rpc.deps import RpcDeps
from billing_sync.rpc.errors import stripe_errors, to_rpc_error
from billing_sync.rpc.scope import Scope, open_scope, own_invoice
from billing_sync.stripe_api import write_options


async def _hosted_url(scope: Scope, invoice_id: str) -> str | None:
    """Where the customer completes the payment themselves (3-D Secure, another card)."""
    try:
        inv = await scope.client.v1.invoices.retrieve_async(invoice_id)
    except stripe.StripeError:
        return None  # the error reply still says what happened, without the link
    return inv.hosted_invoice_url


async def pay(call: PayInvoice, ctx: RpcContext, deps: RpcDeps) -> JsonObject:
    scope = await open_scope(call, ctx, deps)
    await own_invoice(scope, call.invoice_id)
    if scope.default_payment_method is None:
        raise RpcInvalidRequest(
            "no_default_payment_method",
            "Add a card and make it the default before paying.",
        )
    try:
        inv = await scope.client.v1.invoices.pay_async(
            call.invoice_id,
            params={"payment_method": scope.default_payment_method},
            options=write_options(ctx.idempotency_key()),
        )
    except stripe.CardError as exc:
        raise to_rpc_error(
            exc, hosted_invoice_url=await _hosted_url(scope, call.invoice_id)
        ) from exc
    except stripe.StripeError as exc:
        raise to_rpc_error(exc) from exc
    with stripe_errors():
        await mirror.apply(scope.sync, inv)
    return await results.invoice(scope.conn, call.invoice_id)
