"""SetupIntents: save a card for later (``usage=off_session``), as Checkout in setup mode does."""

from __future__ import annotations

from typing import Any

from stripe.params import (
    SetupIntentCancelParams,
    SetupIntentConfirmParams,
    SetupIntentCreateParams,
    SetupIntentListParams,
    SetupIntentRetrieveParams,
    SetupIntentUpdateParams,
)

from . import payment_methods as pms
from . import shapes
from .errors import StripeError, error_object, invalid
from .events import emit, emit_update
from .forms import enum, get_bool, get_list, get_str, merge_metadata
from .lists import paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState, random_token

Json = dict[str, Any]
routes = Routes()


def create(state: FakeState, p: Json) -> Json:
    si = shapes.blank("setup_intent")
    si_id = state.new_id("seti_")
    customer = get_str(p, "customer")
    if customer:
        state.get("customer", customer, "customer")
    # The pinned API version takes ``allowed_payment_method_types`` (the object field is still
    # ``payment_method_types``); the old parameter name is a ``parameter_unknown`` now.
    types = [str(t) for t in get_list(p, "allowed_payment_method_types")]
    si.update(
        id=si_id,
        created=state.clock.now(),
        client_secret=f"{si_id}_secret_{random_token(32)}",
        customer=customer,
        description=get_str(p, "description"),
        usage=enum(p, "usage", ("off_session", "on_session")) or "off_session",
        payment_method_types=types or ["card"],
        allowed_payment_method_types=types or None,
        metadata=merge_metadata({}, p.get("metadata")),
        automatic_payment_methods=None,
    )
    state.add("setup_intent", si)
    emit(state, "setup_intent.created", state.render(si))
    return si


def confirm(
    state: FakeState, si: Json, pm_id: str | None, *, authenticated: bool = False
) -> StripeError | None:
    """Validate the card and attach it to the intent's customer. Returns the decline, if any,
    after recording it on the intent and emitting ``setup_intent.setup_failed``.

    A card that needs 3-D Secure stops at ``requires_action`` unless ``authenticated`` (a
    hosted page, where the customer passes the challenge)."""
    if si["status"] not in ("requires_payment_method", "requires_confirmation"):
        raise invalid(
            f"You cannot confirm this SetupIntent because it has a status of {si['status']}.",
            code="setup_intent_unexpected_state",
        )
    pm_id = pm_id or si["payment_method"]
    if not pm_id:
        raise invalid(
            "You cannot confirm this SetupIntent because it's missing a payment method.",
            code="setup_intent_unexpected_state",
        )
    pm = pms.resolve(state, pm_id)
    error: StripeError | None = None
    card = pms.card_spec(pm)
    if card.requires_authentication and not authenticated:
        si.update(
            status="requires_action",
            payment_method=pm["id"],
            next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure"}},
        )
        emit(state, "setup_intent.requires_action", state.render(si))
        return None
    try:
        if card.fails_on_attach and card.decline_code:
            # Stripe verifies the card while setting it up; these cards fail right here.
            raise pms.card_declined_for(card)
        if si["customer"]:
            pms.attach(state, pm, si["customer"])
    except StripeError as exc:
        error = exc
    if error is not None:
        si.update(status="requires_payment_method", payment_method=None)
        rendered_pm = state.render(pm)
        si["last_setup_error"] = error_object(error, rendered_pm)
        emit(state, "setup_intent.setup_failed", state.render(si))
        # Stripe's error body names the payment method and the intent it failed on.
        error.extra["payment_method"] = rendered_pm
        error.extra["setup_intent"] = state.render(si)
        return error
    si.update(status="succeeded", payment_method=pm["id"], last_setup_error=None, next_action=None)
    emit(state, "setup_intent.succeeded", state.render(si))
    return None


@routes.post("/v1/setup_intents", params=Allow(SetupIntentCreateParams))
def create_setup_intent(ctx: Ctx) -> Json:
    si = create(ctx.state, ctx.params)
    if pm_id := get_str(ctx.params, "payment_method"):
        si["payment_method"] = pms.resolve(ctx.state, pm_id)["id"]
        si["status"] = "requires_confirmation"
    if get_bool(ctx.params, "confirm") and (error := confirm(ctx.state, si, None)):
        raise error
    return ctx.state.render(si)


@routes.get("/v1/setup_intents/{id}", params=Allow(SetupIntentRetrieveParams))
def retrieve_setup_intent(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("setup_intent", ctx.arg("id"), "intent"))


@routes.post("/v1/setup_intents/{id}", params=Allow(SetupIntentUpdateParams))
def update_setup_intent(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    si = state.get("setup_intent", ctx.arg("id"), "intent")
    before = state.render(si)
    si["metadata"] = merge_metadata(si["metadata"], p.get("metadata"))
    if "description" in p:
        si["description"] = get_str(p, "description") or None
    if customer := get_str(p, "customer"):
        si["customer"] = state.get("customer", customer, "customer")["id"]
    if pm_id := get_str(p, "payment_method"):
        si["payment_method"] = pms.resolve(state, pm_id)["id"]
        si["status"] = "requires_confirmation"
    after = state.render(si)
    emit_update(state, "setup_intent.updated", before, after)
    return after


@routes.post("/v1/setup_intents/{id}/confirm", params=Allow(SetupIntentConfirmParams))
def confirm_setup_intent(ctx: Ctx) -> Json:
    si = ctx.state.get("setup_intent", ctx.arg("id"), "intent")
    if error := confirm(ctx.state, si, get_str(ctx.params, "payment_method")):
        raise error
    return ctx.state.render(si)


@routes.post("/v1/setup_intents/{id}/cancel", params=Allow(SetupIntentCancelParams))
def cancel_setup_intent(ctx: Ctx) -> Json:
    state = ctx.state
    si = state.get("setup_intent", ctx.arg("id"), "intent")
    if si["status"] in ("succeeded", "canceled"):
        raise invalid(
            f"You cannot cancel this SetupIntent because it has a status of {si['status']}.",
            code="setup_intent_unexpected_state",
        )
    si.update(
        status="canceled",
        cancellation_reason=enum(
            ctx.params, "cancellation_reason", ("abandoned", "requested_by_customer", "duplicate")
        ),
    )
    emit(state, "setup_intent.canceled", state.render(si))
    return state.render(si)


@routes.get("/v1/setup_intents", params=Allow(SetupIntentListParams))
def list_setup_intents(ctx: Ctx) -> Json:
    customer = get_str(ctx.params, "customer")
    pm = get_str(ctx.params, "payment_method")
    every = ctx.state.newest_first("setup_intent")
    rows = [
        si
        for si in every
        if (not customer or si["customer"] == customer) and (not pm or si["payment_method"] == pm)
    ]
    return paginate(
        rows, ctx.params, "/v1/setup_intents", ctx.state.render, "setup_intent", unfiltered=every
    )
