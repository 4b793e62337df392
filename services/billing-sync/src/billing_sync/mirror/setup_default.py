"""A card added through a setup session (``payment_method.create_setup_session``)
becomes the customer's default once its SetupIntent succeeds.

The session and its SetupIntent carry metadata naming the RPC call that created them
(:data:`CALL_KEY`) and :data:`DEFAULT_KEY` = ``pending``. The worker, refreshing a
``checkout.session.completed`` or ``setup_intent.succeeded`` event
(``dispatch``), calls :func:`make_default`: it sets the card as the customer's
``invoice_settings.default_payment_method`` and marks the intent ``done``, each write
with an idempotency key of the intent's, so the two events (and redeliveries of either)
set it once; a replay after the customer picked another default finds ``done`` and
leaves their choice alone.
"""

from __future__ import annotations

import stripe

from billfold.logs import get_logger
from billing_sync.mirror.context import SyncContext, ref_id
from billing_sync.stripe_api import idempotency_key, write_options

log = get_logger("billing_sync.mirror.setup_default")

CALL_KEY = "billfold_rpc_call"
DEFAULT_KEY = "billfold_make_default"
PENDING = "pending"
DONE = "done"


def metadata(call_id: str) -> dict[str, str]:
    """What the session and its SetupIntent carry."""
    return {CALL_KEY: call_id, DEFAULT_KEY: PENDING}


async def make_default(ctx: SyncContext, intent: stripe.SetupIntent) -> bool:
    """Make the intent's card its customer's default if the intent asks for it and has
    not done so yet; returns whether it did. Call before refreshing the customer."""
    marks = intent.metadata.to_dict() if intent.metadata else {}
    customer = ref_id(intent.customer)
    pm = ref_id(intent.payment_method)
    if intent.status != "succeeded" or marks.get(DEFAULT_KEY) != PENDING or not customer or not pm:
        return False
    await ctx.client.v1.customers.update_async(
        customer,
        params={"invoice_settings": {"default_payment_method": pm}},
        options=write_options(idempotency_key("setup-default", intent.id, pm)),
    )
    await ctx.client.v1.setup_intents.update_async(
        intent.id,
        params={"metadata": {DEFAULT_KEY: DONE}},
        options=write_options(idempotency_key("setup-default-done", intent.id)),
    )
    log.info("setup_card_made_default", setup_intent=intent.id, call_id=marks.get(CALL_KEY))
    return True
