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

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from billfold.logs import get_logger
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
    RpcUnavailable,
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
#: How long a handler may run past its caller's deadline (finishing a Stripe write that
#: is under way keeps the mirror right) before it gives up: a hung Stripe must not hold a
#: pooled connection and the customer's lock for the HTTP client's 30 s.
OVERRUN = 10.0
C = TypeVar("C", bound=CallBase)
Handler = Callable[[C, RpcContext, RpcDeps], Awaitable[JsonObject]]

log = get_logger("billing_sync.rpc")


def _bind(handler: Handler[C], deps: RpcDeps) -> Callable[[C, RpcContext], Awaitable[JsonObject]]:
    async def run(call: C, ctx: RpcContext) -> JsonObject:
        try:
            async with asyncio.timeout(max(0.0, ctx.remaining()) + OVERRUN):
                return await handler(call, ctx, deps)
        except TimeoutError:
            # Whether the write reached Stripe is unknown: not stored, so the caller's
            # retry runs the call again, and the same idempotency keys make Stripe
            # answer a write it already made instead of making it twice.
            log.warning("rpc_handler_overran", overrun_s=OVERRUN)
            raise RpcUnavailable(code="stripe_timeout") from None

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
