"""Subscription calls: cancel at period end (or not), resume a paused one, auto-pay."""

from __future__ import annotations

from stripe.params import SubscriptionUpdateParams

from billfold.rpc import (
    JsonObject,
    ResumeSubscription,
    RpcContext,
    SetAutoPay,
    SetCancelAtPeriodEnd,
)
from billing_sync.mirror import subscriptions as mirror
from billing_sync.rpc import results
from billing_sync.rpc.deps import RpcDeps
from billing_sync.rpc.errors import stripe_errors
from billing_sync.rpc.scope import Scope, open_scope, own_subscription
from billing_sync.stripe_api import write_options

#: Days a customer has to pay an invoice once auto-pay is off (``send_invoice`` needs it).
DAYS_UNTIL_DUE = 30


async def _update(
    scope: Scope, ctx: RpcContext, subscription_id: str, params: SubscriptionUpdateParams
) -> JsonObject:
    params["expand"] = mirror.EXPAND
    with stripe_errors():
        sub = await scope.client.v1.subscriptions.update_async(
            subscription_id,
            params=params,
            options=write_options(ctx.idempotency_key()),
        )
        await mirror.apply(scope.sync, sub)
    return await results.subscription(scope.conn, subscription_id)


async def set_cancel_at_period_end(
    call: SetCancelAtPeriodEnd, ctx: RpcContext, deps: RpcDeps
) -> JsonObject:
    scope = await open_scope(call, ctx, deps)
    await own_subscription(scope, call.subscription_id)
    params: SubscriptionUpdateParams = {"cancel_at_period_end": call.cancel_at_period_end}
    if call.reason is not None:
        if call.reason.feedback is not None:
            params["cancellation_details"] = {"feedback": call.reason.feedback}
        if call.reason.comment is not None:
            params.setdefault("cancellation_details", {})["comment"] = call.reason.comment
    return await _update(scope, ctx, call.subscription_id, params)


async def set_auto_pay(call: SetAutoPay, ctx: RpcContext, deps: RpcDeps) -> JsonObject:
    scope = await open_scope(call, ctx, deps)
    await own_subscription(scope, call.subscription_id)
    params: SubscriptionUpdateParams = (
        {"collection_method": "charge_automatically"}
        if call.auto_pay
        else {"collection_method": "send_invoice", "days_until_due": DAYS_UNTIL_DUE}
    )
    return await _update(scope, ctx, call.subscription_id, params)


async def resume(call: ResumeSubscription, ctx: RpcContext, deps: RpcDeps) -> JsonObject:
    """Resume what is paused. Stripe has two pauses: payment collection paused on a live
    subscription (``pause_collection``, resumed by clearing it) and the ``paused`` status
    of a trial that ended without a payment method (``/resume``, which bills a new period
    at once). The mirror says which one this is; ``/resume`` otherwise, so a subscription
    that is not paused at all gets Stripe's own refusal."""
    scope = await open_scope(call, ctx, deps)
    await own_subscription(scope, call.subscription_id)
    row = await scope.conn.fetchrow(
        "SELECT status, pause_collection_behavior FROM mirror.subscriptions WHERE stripe_id = $1",
        call.subscription_id,
    )
    if row is not None and row["status"] != "paused" and row["pause_collection_behavior"]:
        return await _update(scope, ctx, call.subscription_id, {"pause_collection": ""})
    with stripe_errors():
        sub = await scope.client.v1.subscriptions.resume_async(
            call.subscription_id,
            params={"expand": mirror.EXPAND},
            options=write_options(ctx.idempotency_key()),
        )
        await mirror.apply(scope.sync, sub)
    return await results.subscription(scope.conn, call.subscription_id)
