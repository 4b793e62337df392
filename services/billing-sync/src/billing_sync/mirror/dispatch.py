"""Which mirror objects an event asks us to refresh, and under which lock.

The event is only a hint that something changed: what it names is fetched fresh
(``refresh``), so only the object's id and its customer are read from the payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing_sync.mirror import customers, invoices, payment_methods, setup_default, subscriptions
from billing_sync.mirror.context import SyncContext, ref_id

# Refresh order inside one customer's group: the customer first (its default payment
# method decides the payment methods' flag), then what hangs off it.
KINDS = (
    "customer",
    "payment_method",
    "setup_intent",
    "checkout_session",
    "subscription",
    "invoice",
)


@dataclass(frozen=True, order=True)
class Target:
    kind: str
    id: str

    @property
    def rank(self) -> int:
        return KINDS.index(self.kind)


def targets(event_type: str, obj: dict[str, Any]) -> list[Target]:
    """What to refresh for an event of ``event_type`` about ``obj`` (its payload)."""
    ident = obj.get("id")
    kind = obj.get("object")
    if not isinstance(ident, str):
        return []  # e.g. invoice.upcoming: a preview without an id
    if event_type.startswith("customer.subscription."):
        return [Target("subscription", ident)]
    if event_type.startswith("customer.tax_id."):
        owner = ref_id(obj.get("customer"))
        return [Target("customer", owner)] if owner else []
    if event_type.startswith("customer.") and kind == "customer":
        return [Target("customer", ident)]
    if event_type.startswith("invoice.") and kind == "invoice":
        return [Target("invoice", ident)]
    if event_type.startswith("payment_method."):
        return [Target("payment_method", ident)]
    if event_type == "setup_intent.succeeded":
        return [Target("setup_intent", ident)]
    if event_type == "checkout.session.completed":
        return [Target("checkout_session", ident)]
    return []


def lock_key(obj: dict[str, Any]) -> str:
    """Refreshes are serialised per Stripe customer: everything of one customer (its
    default payment method, its subscriptions' owner) is written by one worker at a time.
    Objects without a customer (a detached payment method) lock on their own id."""
    if obj.get("object") == "customer" and isinstance(obj.get("id"), str):
        return str(obj["id"])
    return ref_id(obj.get("customer")) or str(obj.get("id"))


async def _setup_intent(ctx: SyncContext, setup_intent_id: str) -> None:
    intent = await ctx.client.v1.setup_intents.retrieve_async(setup_intent_id)
    # A card from an RPC setup session becomes the default first, so the customer's
    # refresh below already shows it.
    await setup_default.make_default(ctx, intent)
    customer = ref_id(intent.customer)
    if customer:
        await customers.refresh(ctx, customer)
    pm = ref_id(intent.payment_method)
    if pm:
        await payment_methods.refresh(ctx, pm)


async def _checkout_session(ctx: SyncContext, session_id: str) -> None:
    session = await ctx.client.v1.checkout.sessions.retrieve_async(session_id)
    customer = ref_id(session.customer)
    if customer:
        await customers.refresh(ctx, customer)
    intent = ref_id(session.setup_intent)
    if intent:
        await _setup_intent(ctx, intent)
    subscription = ref_id(session.subscription)
    if subscription:
        await subscriptions.refresh(ctx, subscription)


async def refresh(ctx: SyncContext, target: Target) -> None:
    if target.kind == "customer":
        await customers.refresh(ctx, target.id)
    elif target.kind == "subscription":
        await subscriptions.refresh(ctx, target.id)
    elif target.kind == "invoice":
        await invoices.refresh(ctx, target.id)
    elif target.kind == "payment_method":
        await payment_methods.refresh(ctx, target.id)
    elif target.kind == "setup_intent":
        await _setup_intent(ctx, target.id)
    elif target.kind == "checkout_session":
        await _checkout_session(ctx, target.id)
    else:  # pragma: no cover - KINDS and targets() agree
        raise ValueError(f"unknown target kind {target.kind}")
