"""The customer's actions as HTML forms: Plan (cancel, resume), Payment methods (update
card, make default, remove, auto-pay), Invoices (pay), Profile (edit).

Each POST: same-origin, a live browser session, the CSRF token, then the action layer
(``actions.Actions.perform``, which enforces the session's permissions: a hidden section
404, a disallowed action 403, whatever the page showed). Then post/redirect/get: a 303
back to the section with ``?done=…`` or ``?failed=…`` (a fixed key, never free text), which
the section shows as a status message. Validation errors of the profile form re-render
the form (400) with each error beside its field and the values kept.

CSRF: the top-level flow is authenticated by a cookie, which the browser attaches to a
forged cross-site POST too, so the token is what makes a POST ours. The framed flow
authenticates by the ``bfs_`` token in the path: no ambient credential exists, and a
forger who knows the path knows the secret itself. The token is checked there as well
(one code path; our forms always carry it) but it adds nothing there.

Stripe's hosted pages refuse framing, and our CSP's ``form-action 'self'`` would block a
redirect from a form POST to them. So a POST that leads to Stripe answers a hand-over
page with a link: at top level our script follows it at once (the checkout returns to
``success_url``); in a frame it opens in a new tab (``target=_blank``) and the frame
re-checks the mirror when the customer comes back (a "Done? Refresh" link, and our
script follows it on focus).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from billfold.db import DB_POOL
from billfold.logs import get_logger
from billfold.rpc import (
    CancellationReason,
    CreateSetupSession,
    DetachPaymentMethod,
    PayInvoice,
    ResumeSubscription,
    SetAutoPay,
    SetCancelAtPeriodEnd,
    SetDefaultPaymentMethod,
    UpdateBillingProfile,
)
from portal_web import call_ids, credentials, mirror, presenters
from portal_web.actions import ACTIONS, ActionFailed, Actor, permit
from portal_web.browser_sessions import Principal
from portal_web.i18n import current
from portal_web.i18n import gettext as _
from portal_web.ids import utcnow
from portal_web.messages import done_message
from portal_web.pages import PageError, render
from portal_web.portal_routes import authenticate
from portal_web.profile_form import (
    FIELDS,
    TAX_ID_TYPES,
    ProfileForm,
    countries,
    form_from_profile,
    validate,
)
from portal_web.state import SETTINGS

log = get_logger("portal_web.action_routes")

FEEDBACK = (
    "too_expensive",
    "missing_features",
    "switched_service",
    "unused",
    "customer_service",
    "too_complex",
    "low_quality",
    "other",
)


def feedback_label(key: str) -> str:
    return {
        "too_expensive": _("It's too expensive"),
        "missing_features": _("Some features are missing"),
        "switched_service": _("I'm switching to another service"),
        "unused": _("I don't use it enough"),
        "customer_service": _("Customer service was less than expected"),
        "too_complex": _("It's too complicated"),
        "low_quality": _("Quality was less than expected"),
        "other": _("Other reason"),
    }[key]


# --- common -------------------------------------------------------------------------------


async def _posted(request: web.Request) -> tuple[Principal, Any]:
    """A state-changing form: same-origin, a live session, the CSRF token."""
    if not credentials.same_origin_post(request, request.app[SETTINGS]):
        raise PageError(403, "forbidden")
    principal = await authenticate(request)
    form = await request.post()
    csrf = form.get("csrf")
    if not credentials.csrf_ok(principal.token, csrf if isinstance(csrf, str) else None):
        log.info("csrf_refused", path=request.path.split("/")[-1])
        raise PageError(403, "forbidden")
    return principal, form


def _gate(principal: Principal, call_type: type[Any]) -> None:
    """The action layer's permission check, as an error page (404 / 403)."""
    try:
        permit(principal, call_type)
    except ActionFailed as exc:
        raise PageError(exc.status, "not_found" if exc.kind == "hidden" else "forbidden") from None


def _prefix(principal: Principal) -> str:
    return credentials.prefix(principal.embedded, principal.token)


def _back(principal: Principal, section: str, **query: str) -> web.Response:
    location = f"{_prefix(principal)}/{section}"
    if query:
        location += "?" + urlencode(query)
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _field(form: Any, name: str, limit: int = 512) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


async def _perform(request: web.Request, principal: Principal, call: Any, form: Any) -> Any:
    """Perform ``call`` with the ``call_id`` the form's hidden field scopes
    (``call_ids``: a double-submitted form makes one call)."""
    call = call_ids.from_form(principal.id, form.get(call_ids.FORM_FIELD), call)
    return await request.app[ACTIONS].perform(Actor.of(request, principal), call)


def _flow(principal: Principal, kind: str) -> bool:
    return bool(principal.flow and principal.flow.get("type") == kind)


# --- Plan ---------------------------------------------------------------------------------


async def _own_subscription(request: web.Request, principal: Principal) -> mirror.Subscription:
    sub_id = request.match_info["sub"]
    try:
        sub = await mirror.subscription(
            request.app[DB_POOL], principal.site_id, principal.customer_id, sub_id
        )
    except Exception as exc:  # the mirror cannot be read: the action cannot be offered
        log.warning("mirror_read_failed", section="plan", error=type(exc).__name__)
        raise PageError(503, "server_error") from None
    if sub is None:
        raise PageError(404, "not_found")
    return sub


async def cancel_confirm(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _gate(principal, SetCancelAtPeriodEnd)
    sub = await _own_subscription(request, principal)
    view = presenters.plan_view(sub, utcnow())
    if not view.cancellable:
        return _back(principal, "plan")
    return render(
        request,
        "cancel.html",
        current="plan",
        plan=view,
        what_happens=presenters.cancel_text(sub),
        reasons=[(key, feedback_label(key)) for key in FEEDBACK],
    )


async def cancel(request: web.Request) -> web.StreamResponse:
    principal, form = await _posted(request)
    _gate(principal, SetCancelAtPeriodEnd)
    sub_id = request.match_info["sub"]
    feedback = _field(form, "feedback")
    comment = _field(form, "comment", 500)
    reason = None
    if feedback in FEEDBACK or comment:
        reason = CancellationReason(
            feedback=feedback if feedback in FEEDBACK else None,
            comment=comment or None,
        )
    try:
        call = SetCancelAtPeriodEnd(
            site_id=principal.site_id,
            customer_id=principal.customer_id,
            subscription_id=sub_id,
            cancel_at_period_end=True,
            reason=reason,
        )
    except ValidationError:
        raise PageError(404, "not_found") from None
    try:
        await _perform(request, principal, call, form)
    except ActionFailed as exc:
        return _back(principal, "plan", failed=exc.public_code)
    if _flow(principal, "subscription_cancel"):
        return _back(principal, "plan", done="cancelled", flow="done")
    return _back(principal, "plan", done="cancelled")


async def resume(request: web.Request) -> web.StreamResponse:
    principal, form = await _posted(request)
    _gate(principal, SetCancelAtPeriodEnd)
    sub = await _own_subscription(request, principal)
    scope = {"site_id": principal.site_id, "customer_id": principal.customer_id}
    call: Any
    # Paused (the status, or payment collection): billing-sync resumes it at Stripe.
    # Set to cancel: resuming undoes that.
    paused = sub.status == "paused" or presenters.collection_paused(sub)
    if paused:
        call = ResumeSubscription(**scope, subscription_id=sub.id)
    else:
        call = SetCancelAtPeriodEnd(**scope, subscription_id=sub.id, cancel_at_period_end=False)
    try:
        await _perform(request, principal, call, form)
    except ActionFailed as exc:
        return _back(principal, "plan", failed=exc.public_code)
    return _back(principal, "plan", done="unpaused" if paused else "resumed")


# --- Payment methods ----------------------------------------------------------------------


async def update_step(request: web.Request) -> web.StreamResponse:
    """The "update card" step (where a ``payment_method_update`` flow lands): one button
    that goes on to Stripe's page."""
    principal = await authenticate(request)
    _gate(principal, CreateSetupSession)
    return render(request, "update_card.html", current="payment-methods")


async def current_default(request: web.Request, principal: Principal) -> str:
    """The customer's default payment method now ("" when none, or unreadable), so the
    page after Stripe's can tell whether the new card has arrived in the mirror."""
    try:
        found = await mirror.payment_methods(
            request.app[DB_POOL], principal.site_id, principal.customer_id
        )
    except Exception as exc:
        log.warning("mirror_read_failed", section="payment_methods", error=type(exc).__name__)
        return ""
    return next((pm.id for pm in found if pm.is_default), "")


def setup_returns(base: str, principal: Principal, was: str) -> tuple[str, str]:
    """Where Stripe's card page sends the customer back (success, cancel), for each way
    of being in the portal.

    At top level, into the portal (the cookie comes along, SameSite=Lax allows a
    top-level GET). From a frame, the new tab lands on a page that needs no session (the
    framed token never travels to Stripe) and the frame re-checks. A tenant's own UI
    (a multi-use link's token as Bearer) gets its session's ``return_url`` when it has
    one (the tenant's page re-reads ``/payment-methods``), else the same session-less
    page as a frame: its customer has no portal cookie to come back into."""
    if principal.via_link and principal.return_url:
        return principal.return_url, principal.return_url
    if principal.embedded or principal.via_link:
        return f"{base}/hosted-return?what=card_added", f"{base}/hosted-return?what=card_cancelled"
    pages = f"{base}{_prefix(principal)}/payment-methods"
    return pages + "?" + urlencode({"updated": "1", "was": was}), pages + "?done=card_cancelled"


def setup_session(principal: Principal, success_url: str, cancel_url: str) -> CreateSetupSession:
    language = current().language
    return CreateSetupSession(
        site_id=principal.site_id,
        customer_id=principal.customer_id,
        success_url=success_url,
        cancel_url=cancel_url,
        locale=language if language in ("en", "de") else None,
    )


async def update_card(request: web.Request) -> web.StreamResponse:
    principal, form = await _posted(request)
    _gate(principal, CreateSetupSession)
    was = await current_default(request, principal)
    success, cancelled = setup_returns(request.app[SETTINGS].portal_base_url, principal, was)
    try:
        result = await _perform(
            request, principal, setup_session(principal, success, cancelled), form
        )
    except ActionFailed as exc:
        return _back(principal, "payment-methods", failed=exc.public_code)
    url = result.get("url")
    if not isinstance(url, str) or presenters.hosted_link(url) is None:
        log.error("setup_session_without_url")
        return _back(principal, "payment-methods", failed="unavailable")
    recheck = f"{_prefix(principal)}/payment-methods?" + urlencode({"updated": "1", "was": was})
    return render(
        request,
        "handover.html",
        current="payment-methods",
        title=_("Update your card"),
        text=_("Your card details are entered on Stripe's secure page, never on ours."),
        link=url,
        link_text=_("Continue to the secure card page"),
        recheck=recheck,
    )


async def _card_action(
    request: web.Request, call_type: type[SetDefaultPaymentMethod | DetachPaymentMethod], done: str
) -> web.StreamResponse:
    principal, form = await _posted(request)
    _gate(principal, call_type)
    try:
        call = call_type(
            site_id=principal.site_id,
            customer_id=principal.customer_id,
            payment_method_id=request.match_info["pm"],
        )
        await _perform(request, principal, call, form)
    except ValidationError:
        raise PageError(404, "not_found") from None
    except ActionFailed as exc:
        return _back(principal, "payment-methods", failed=exc.public_code)
    return _back(principal, "payment-methods", done=done)


async def set_default(request: web.Request) -> web.StreamResponse:
    return await _card_action(request, SetDefaultPaymentMethod, "default_set")


async def remove(request: web.Request) -> web.StreamResponse:
    return await _card_action(request, DetachPaymentMethod, "removed")


async def auto_pay(request: web.Request) -> web.StreamResponse:
    principal, form = await _posted(request)
    _gate(principal, SetAutoPay)
    on = _field(form, "auto_pay") == "on"
    try:
        call = SetAutoPay(
            site_id=principal.site_id,
            customer_id=principal.customer_id,
            subscription_id=request.match_info["sub"],
            auto_pay=on,
        )
        await _perform(request, principal, call, form)
    except ValidationError:
        raise PageError(404, "not_found") from None
    except ActionFailed as exc:
        return _back(principal, "payment-methods", failed=exc.public_code)
    return _back(principal, "payment-methods", done="auto_pay_on" if on else "auto_pay_off")


# --- Invoices -----------------------------------------------------------------------------


async def pay(request: web.Request) -> web.StreamResponse:
    principal, form = await _posted(request)
    _gate(principal, PayInvoice)
    invoice_id = request.match_info["invoice"]
    try:
        call = PayInvoice(
            site_id=principal.site_id, customer_id=principal.customer_id, invoice_id=invoice_id
        )
        await _perform(request, principal, call, form)
    except ValidationError:
        raise PageError(404, "not_found") from None
    except ActionFailed as exc:
        if exc.hosted_url:
            # The customer must act on Stripe's page (3-D Secure, another card): the
            # invoices page offers it (the URL is the mirror's, looked up again there).
            return _back(principal, "invoices", failed=exc.public_code, invoice=invoice_id)
        return _back(principal, "invoices", failed=exc.public_code)
    return _back(principal, "invoices", done="paid")


# --- Profile ------------------------------------------------------------------------------


async def _profile(request: web.Request, principal: Principal) -> mirror.Profile:
    try:
        found = await mirror.profile(request.app[DB_POOL], principal.site_id, principal.customer_id)
    except Exception as exc:
        log.warning("mirror_read_failed", section="profile", error=type(exc).__name__)
        raise PageError(503, "server_error") from None
    if found is None:
        raise PageError(404, "not_found")
    return found


def _render_profile_form(
    request: web.Request, profile: mirror.Profile, form: ProfileForm, status: int = 200
) -> web.Response:
    return render(
        request,
        "profile_edit.html",
        status=status,
        current="profile",
        form=form,
        countries=countries(),
        tax_ids=[
            (
                str(t.get("id")),
                str(t.get("type", "")).replace("_", " ").upper(),
                str(t.get("value", "")),
            )
            for t in profile.tax_ids
        ],
        tax_types=[(t, t.replace("_", " ").upper()) for t in TAX_ID_TYPES],
    )


async def profile_edit(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _gate(principal, UpdateBillingProfile)
    profile = await _profile(request, principal)
    return _render_profile_form(request, profile, form_from_profile(profile))


async def profile_save(request: web.Request) -> web.StreamResponse:
    principal, posted = await _posted(request)
    _gate(principal, UpdateBillingProfile)
    profile = await _profile(request, principal)
    form = ProfileForm(
        values={name: _field(posted, name, 256) for name in (*FIELDS, "tax_type", "tax_value")},
        remove={r for r in posted.getall("remove_tax_id", []) if isinstance(r, str)},
    )
    form.values["country"] = form.values["country"].upper()
    checked = validate(form, profile.tax_ids)
    if checked is None:
        return _render_profile_form(request, profile, form, status=400)
    call = checked.model_copy(
        update={"site_id": principal.site_id, "customer_id": principal.customer_id}
    )
    try:
        await _perform(request, principal, call, posted)
    except ActionFailed as exc:
        param_field = {
            "tax_id_invalid": "tax_value",
            "email_invalid": "email",
            "postal_code_invalid": "postal_code",
        }.get(exc.code)
        if param_field is not None:
            form.errors[param_field] = exc.message
        else:
            form.form_error = exc.message
        return _render_profile_form(request, profile, form, status=exc.status)
    return _back(principal, "profile", done="profile_saved")


# --- after Stripe's pages -----------------------------------------------------------------


async def hosted_return(request: web.Request) -> web.StreamResponse:
    """Where Stripe's page sends a customer who came from a frame (a new tab): no session
    here (the framed token never travels to Stripe), only "go back to the portal"."""
    what = request.query.get("what", "")
    title = done_message(what) or _("Done")
    return render(
        request,
        "hosted_return.html",
        title=title,
        text=_("You can close this tab and return to the billing portal."),
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/hosted-return", hosted_return)
    for base in (credentials.TOP_PREFIX, credentials.FRAME_PREFIX + "/{token}"):
        app.router.add_get(base + "/plan/{sub}/cancel", cancel_confirm)
        app.router.add_post(base + "/plan/{sub}/cancel", cancel)
        app.router.add_post(base + "/plan/{sub}/resume", resume)
        app.router.add_get(base + "/payment-methods/update", update_step)
        app.router.add_post(base + "/payment-methods/update", update_card)
        app.router.add_post(base + "/payment-methods/{pm}/default", set_default)
        app.router.add_post(base + "/payment-methods/{pm}/remove", remove)
        app.router.add_post(base + "/payment-methods/auto-pay/{sub}", auto_pay)
        app.router.add_post(base + "/invoices/{invoice}/pay", pay)
        app.router.add_get(base + "/profile/edit", profile_edit)
        app.router.add_post(base + "/profile/edit", profile_save)
