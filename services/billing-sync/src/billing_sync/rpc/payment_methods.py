"""Payment method calls: a setup session for a new card, the default card, removal."""

from __future__ import annotations

from typing import Any, cast

from stripe.params.checkout import SessionCreateParams

from billfold.rpc import (
    CreateSetupSession,
    DetachPaymentMethod,
    JsonObject,
    RpcContext,
    RpcInvalidRequest,
    SetDefaultPaymentMethod,
)
from billing_sync.mirror import customers, setup_default
from billing_sync.mirror import payment_methods as mirror
from billing_sync.rpc import results
from billing_sync.rpc.deps import RpcDeps
from billing_sync.rpc.errors import stripe_errors
from billing_sync.rpc.scope import open_scope, own_payment_method
from billing_sync.stripe_api import write_options


async def create_setup_session(
    call: CreateSetupSession, ctx: RpcContext, deps: RpcDeps
) -> JsonObject:
    """Checkout in ``setup`` mode for the customer; the card it collects becomes the
    default when it completes (``mirror.setup_default``, run by the worker)."""
    scope = await open_scope(call, ctx, deps)
    marks = setup_default.metadata(call.call_id)
    params: dict[str, Any] = {
        "mode": "setup",
        "customer": scope.stripe_customer,
        "success_url": call.success_url,
        "cancel_url": call.cancel_url,
        "allowed_payment_method_types": ["card"],
        "metadata": marks,
        "setup_intent_data": {"metadata": marks},
    }
    if call.locale is not None:
        params["locale"] = call.locale
    with stripe_errors():
        session = await scope.client.v1.checkout.sessions.create_async(
            params=cast(SessionCreateParams, params),
            options=write_options(ctx.idempotency_key()),
        )
    # Nothing in the mirror changes until the customer completes the page.
    return {
        "object": "setup_session",
        "id": session.id,
        "url": session.url,
        "expires_at": session.expires_at,
        "customer_id": scope.customer_id,
    }


async def set_default(call: SetDefaultPaymentMethod, ctx: RpcContext, deps: RpcDeps) -> JsonObject:
    scope = await open_scope(call, ctx, deps)
    await own_payment_method(scope, call.payment_method_id)
    with stripe_errors():
        await scope.client.v1.customers.update_async(
            scope.stripe_customer,
            params={"invoice_settings": {"default_payment_method": call.payment_method_id}},
            options=write_options(ctx.idempotency_key()),
        )
        # The customer's refresh (with its tax ids) also flips the cards' default flags.
        await customers.refresh(scope.sync, scope.stripe_customer)
    return await results.payment_methods(scope.conn, scope.customer_id)


async def detach(call: DetachPaymentMethod, ctx: RpcContext, deps: RpcDeps) -> JsonObject:
    scope = await open_scope(call, ctx, deps)
    await own_payment_method(scope, call.payment_method_id)
    if scope.default_payment_method == call.payment_method_id:
        raise RpcInvalidRequest(
            "default_payment_method",
            "The default card cannot be removed. Make another card the default first.",
            param="payment_method_id",
        )
    with stripe_errors():
        pm = await scope.client.v1.payment_methods.detach_async(
            call.payment_method_id, options=write_options(ctx.idempotency_key())
        )
        await mirror.apply(scope.sync, pm)
    return await results.payment_methods(scope.conn, scope.customer_id)
