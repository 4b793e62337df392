"""billing-sync's side of the RPC (``billfold.rpc``): portal-web's writes to Stripe.

Every handler runs in the server's run-once transaction (``ctx.conn``) and does, in
order: resolve the call's customer in the mirror and check the object is theirs
(``scope``; else ``RpcNotFound``), take the customer's advisory lock, write to Stripe
through the site's client (``Idempotency-Key`` from ``ctx.idempotency_key(step)``,
``Stripe-Account`` for Connect sites), write Stripe's answer to the mirror with the
mirror's own apply/refresh functions (and so their outbox events), and reply with the
updated mirror object read back (``results``). Stripe's errors become typed errors
(``errors``). One module per concern: ``subscriptions``, ``payment_methods``,
``profile``, ``invoices``. What the worker does when a setup session's card arrives is
``mirror.setup_default``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from billfold.rpc import (
    BILLING_QUEUE,
    CallBase,
    CreateSetupSession,
    DetachPaymentMethod,
    JsonObject,
    PayInvoice,
    ResumeSubscription,
    RpcContext,
    RpcServer,
    SetAutoPay,
    SetCancelAtPeriodEnd,
    SetDefaultPaymentMethod,
    UpdateBillingProfile,
    rpc_server_context,
)
from billing_sync.rpc import invoices, payment_methods, profile, subscriptions
from billing_sync.rpc.deps import RpcDeps
from billing_sync.state import SECRET_BOX, STRIPE

SCHEMA = "mirror"
C = TypeVar("C", bound=CallBase)
Handler = Callable[[C, RpcContext, RpcDeps], Awaitable[JsonObject]]


def _bind(handler: Handler[C], deps: RpcDeps) -> Callable[[C, RpcContext], Awaitable[JsonObject]]:
    async def run(call: C, ctx: RpcContext) -> JsonObject:
        return await handler(call, ctx, deps)

    return run


def register(server: RpcServer, deps: RpcDeps) -> None:
    """Serve every call portal-web makes."""
    server.register(SetCancelAtPeriodEnd, _bind(subscriptions.set_cancel_at_period_end, deps))
    server.register(ResumeSubscription, _bind(subscriptions.resume, deps))
    server.register(SetAutoPay, _bind(subscriptions.set_auto_pay, deps))
    server.register(CreateSetupSession, _bind(payment_methods.create_setup_session, deps))
    server.register(SetDefaultPaymentMethod, _bind(payment_methods.set_default, deps))
    server.register(DetachPaymentMethod, _bind(payment_methods.detach, deps))
    server.register(UpdateBillingProfile, _bind(profile.update_profile, deps))
    server.register(PayInvoice, _bind(invoices.pay, deps))


def rpc_context(
    app: web.Application, *, queue: str = BILLING_QUEUE
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``app.cleanup_ctx`` entry serving ``queue`` (after the pool, the gateway and
    the bus): ``billfold.rpc.rpc_server_context`` with these handlers."""
    return rpc_server_context(
        schema=SCHEMA,
        queue=queue,
        register=lambda server: register(server, RpcDeps(app[STRIPE], app[SECRET_BOX])),
    )
