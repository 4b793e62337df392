"""Checkout Sessions in ``setup`` mode, with the hosted page the fake serves itself.

``session.url`` points at ``/checkout/<id>`` on the fake: a plain HTML card form. Submitting
it (a browser, or a test posting the form) creates the card, confirms the session's
SetupIntent (attaching the card to the customer), completes the session, and redirects to
``success_url`` — emitting ``payment_method.attached``, ``setup_intent.succeeded`` and
``checkout.session.completed`` in that order.
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web
from stripe.params.checkout import (
    SessionCreateParams,
    SessionExpireParams,
    SessionListParams,
    SessionRetrieveParams,
)

from . import customers, setup_intents, shapes
from . import payment_methods as pms
from .catalog import check_currency
from .clock import run_due
from .errors import StripeError, invalid
from .events import emit
from .forms import decode, enum, get_dict, get_list, get_str, merge_metadata, req_str
from .lists import paginate
from .params import Allow
from .routing import STATE_KEY, Ctx, Routes
from .state import FakeState, random_token

Json = dict[str, Any]
routes = Routes()
SESSION_LIFETIME = 24 * 3600


@routes.post("/v1/checkout/sessions", params=Allow(SessionCreateParams))
def create_session(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    mode = enum(p, "mode", ("payment", "setup", "subscription"))
    if mode is None:
        raise invalid("Missing required param: mode.", param="mode", code="parameter_missing")
    if mode != "setup":
        raise invalid(
            f"The fake Stripe only implements Checkout in setup mode, not mode={mode}.",
            param="mode",
        )
    success_url = req_str(p, "success_url")
    customer = get_str(p, "customer")
    if customer:
        customers.live_customer(state, customer)
    session_id = state.new_id("cs_test_", 58)
    now = state.clock.now()
    si_params = {**(get_dict(p, "setup_intent_data") or {}), "customer": customer}
    si = setup_intents.create(state, si_params)
    session = shapes.blank("checkout.session")
    # The pinned API version takes ``allowed_payment_method_types`` (the object field is still
    # ``payment_method_types``); the old parameter name is a ``parameter_unknown`` now.
    types = [str(t) for t in get_list(p, "allowed_payment_method_types")]
    session.update(
        id=session_id,
        created=now,
        expires_at=now + SESSION_LIFETIME,
        mode="setup",
        status="open",
        payment_status="no_payment_required",
        customer=customer,
        customer_email=get_str(p, "customer_email"),
        customer_creation=enum(p, "customer_creation", ("always", "if_required")),
        currency=check_currency(c) if (c := get_str(p, "currency")) else None,
        success_url=success_url,
        cancel_url=get_str(p, "cancel_url"),
        client_reference_id=get_str(p, "client_reference_id"),
        metadata=merge_metadata({}, p.get("metadata")),
        payment_method_types=types or ["card"],
        setup_intent=si["id"],
        customer_details=None,
        url=state.url(f"/checkout/{session_id}"),
        ui_mode="hosted_page",
        _token=random_token(),
    )
    if types:
        # Like Stripe, the session shows this field only when it was set.
        session["allowed_payment_method_types"] = types
    state.add("checkout.session", session)
    return state.render(session)


@routes.get("/v1/checkout/sessions/{id}", params=Allow(SessionRetrieveParams))
def retrieve_session(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("checkout.session", ctx.arg("id"), "session"))


@routes.get("/v1/checkout/sessions", params=Allow(SessionListParams))
def list_sessions(ctx: Ctx) -> Json:
    customer = get_str(ctx.params, "customer")
    status = get_str(ctx.params, "status")
    every = ctx.state.newest_first("checkout.session")
    rows = [
        s
        for s in every
        if (not customer or s["customer"] == customer) and (not status or s["status"] == status)
    ]
    return paginate(
        rows, ctx.params, "/v1/checkout/sessions", ctx.state.render, "session", unfiltered=every
    )


@routes.post("/v1/checkout/sessions/{id}/expire", params=Allow(SessionExpireParams))
def expire_session(ctx: Ctx) -> Json:
    state = ctx.state
    session = state.get("checkout.session", ctx.arg("id"), "session")
    if session["status"] != "open":
        raise invalid(
            f"Only Checkout Sessions with a status of `open` can be expired; this one is "
            f"{session['status']}.",
        )
    session.update(status="expired", url=None)
    emit(state, "checkout.session.expired", state.render(session))
    return state.render(session)


# --- hosted page -----------------------------------------------------------------------------


def _parse_expiry(raw: str) -> tuple[int, int]:
    month, _, year = raw.replace(" ", "").partition("/")
    if not (month.isdigit() and year.isdigit()):
        raise StripeError(
            402,
            "card_error",
            "Your card's expiration date is incomplete.",
            code="invalid_expiry_year",
        )
    return int(month), int(year)


def complete(state: FakeState, session: Json, form: Json) -> StripeError | None:
    """What submitting the hosted form does; returns the card error to show, if any."""
    try:
        month, year = _parse_expiry(str(form.get("expiry", "")))
        pm = pms.create_from_params(
            state,
            {
                "type": "card",
                "card": {
                    "number": str(form.get("cardnumber", "")),
                    "exp_month": str(month),
                    "exp_year": str(year),
                },
                "billing_details": {
                    "email": form.get("email") or session["customer_email"] or "",
                    "name": form.get("name") or "",
                },
            },
        )
    except StripeError as exc:
        return exc
    si = state.get("setup_intent", session["setup_intent"])
    if si["customer"] is None and session["customer_creation"] == "always":
        created = customers.create_customer(
            Ctx(state, {"email": pm["billing_details"]["email"] or ""})
        )
        si["customer"] = session["customer"] = created["id"]
    # The customer is on the page, so a 3-D Secure challenge counts as passed.
    if error := setup_intents.confirm(state, si, pm["id"], authenticated=True):
        return error
    session.update(status="complete", url=None)
    session["customer_details"] = {
        "address": None,
        "business_name": None,
        "email": pm["billing_details"]["email"],
        "individual_name": None,
        "name": pm["billing_details"]["name"],
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": None,
    }
    emit(state, "checkout.session.completed", state.render(session))
    return None


def _page(session: Json, error: str | None = None) -> str:
    title = "Save a card (fake Stripe Checkout)"
    if session["status"] != "open":
        body = f"<p>This Checkout Session is no longer active ({session['status']}).</p>"
    else:
        email = html.escape(session["customer_email"] or "")
        cancel = session["cancel_url"]
        body = (
            (f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "")
            + '<form method="post">'
            f'<label>Email <input name="email" type="email" value="{email}"></label>'
            '<label>Card number <input name="cardnumber" inputmode="numeric" '
            'value="4242 4242 4242 4242"></label>'
            '<label>Expiry (MM / YY) <input name="expiry" value="12 / 34"></label>'
            '<label>CVC <input name="cvc" value="123"></label>'
            '<label>Name on card <input name="name"></label>'
            '<button type="submit">Save card</button></form>'
            + (f'<p><a href="{html.escape(cancel)}">Cancel</a></p>' if cancel else "")
            + "<p><small>Test mode — this is Billfold's fake Stripe, not Stripe. Use test "
            "card numbers only.</small></p>"
        )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{title}</title><style>label{{display:block;margin:.5em 0}}"
        ".error{color:#b00}</style>"
        f"<h1>{title}</h1>{body}</html>"
    )


async def page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    session = state.find("checkout.session", request.match_info["id"])
    if session is None:
        raise web.HTTPNotFound(text="No such Checkout Session")
    return web.Response(text=_page(session), content_type="text/html")


async def submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    session = state.find("checkout.session", request.match_info["id"])
    if session is None:
        raise web.HTTPNotFound(text="No such Checkout Session")
    if session["status"] != "open":
        return web.Response(text=_page(session), content_type="text/html", status=409)
    form = decode(await request.text())
    state.request = None  # events from the hosted page carry no API request
    run_due(state)
    with state.clock.pinned(state.clock.now()):
        error = complete(state, session, form)
    if error is not None:
        return web.Response(
            text=_page(session, error.message), content_type="text/html", status=402
        )
    target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
    raise web.HTTPSeeOther(location=target)
