"""The portal's pages: Plan, Invoices, Payment methods, Usage, Profile, and sign-out (the
actions on them are ``action_routes``).

Every page first authenticates the browser session (``authenticate``): from the cookie
under ``/p/``, from the path under ``/e/{bfs_…}/``. A section the session hides answers
404 whatever the HTML shows; an action it does not allow answers 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from billfold.db import DB_POOL
from billfold.logs import get_logger
from portal_web import access, browser_sessions, credentials, mirror, presenters
from portal_web.actions import allowed, failure_message
from portal_web.browser_sessions import Principal
from portal_web.i18n import gettext as _
from portal_web.ids import utcnow
from portal_web.messages import DONE_ACTIONS, done_message
from portal_web.mirror_cache import MIRROR_CACHE
from portal_web.pages import SECTIONS, PageError, enabled_sections, render, render_memoized
from portal_web.state import PRINCIPAL, SETTINGS, VALIDATOR

log = get_logger("portal_web.portal")
routes = web.RouteTableDef()

INVOICES_PER_PAGE = 12
#: How many times a waiting page (a card or a payment on Stripe's page) looks again, every
#: 2 s (our script): long enough for a customer to fill in Stripe's page in another tab.
UPDATE_POLLS = 150


async def authenticate(request: web.Request) -> Principal:
    """The browser session of this request (cookie under ``/p/``, path under ``/e/``), or
    the page that says why not."""
    return await access.browser_principal(request)


def _require_section(principal: Principal, slug: str) -> None:
    if slug not in enabled_sections(principal):
        raise PageError(404, "not_found")


def require_action(principal: Principal, section: str, flag: str) -> None:
    """A disallowed action is a 403, whatever the page offered."""
    if principal.preview:
        raise PageError(403, "preview")
    if not principal.sections.get(section, {}).get(flag):
        raise PageError(403, "forbidden")


def _flow_step(principal: Principal) -> str | None:
    """Where a session's deep link (session-api's ``flow``) lands, if it may: the update
    card step, or the confirm step of cancelling that subscription."""
    flow = principal.flow or {}
    if flow.get("type") == "payment_method_update" and allowed(
        principal, "payment_methods", "allow_update"
    ):
        return "payment-methods/update"
    sub = flow.get("subscription")
    if (
        flow.get("type") == "subscription_cancel"
        and isinstance(sub, str)
        and sub.isascii()
        and sub.replace("_", "").isalnum()
        and allowed(principal, "subscriptions", "allow_cancel")
    ):
        return f"plan/{sub}/cancel"
    return None


async def home(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    sections = enabled_sections(principal)
    prefix = credentials.prefix(principal.embedded, principal.token)
    if not sections:
        return render(request, "empty.html")
    step = _flow_step(principal) or sections[0]
    return web.Response(status=303, headers={"Location": f"{prefix}/{step}"})


@dataclass(frozen=True, slots=True)
class Flash:
    """The result of the action the customer just took (post/redirect/get), announced
    to screen readers: ``?done=<key>`` or ``?failed=<code>``, fixed keys only."""

    text: str
    ok: bool
    # The flow is done: offer the way back to the tenant (and go there at top level).
    flow_done: bool = False
    # The action that just succeeded (``messages.DONE_ACTIONS``): the framed portal
    # tells the embedding page (the drop-in's ``action`` event).
    action: str | None = None


def flash(request: web.Request) -> Flash | None:
    done = request.query.get("done")
    if done is not None:
        text = done_message(done)
        if text is not None:
            return Flash(
                text,
                ok=True,
                flow_done=request.query.get("flow") == "done",
                action=DONE_ACTIONS.get(done),
            )
    failed = request.query.get("failed")
    if failed is not None and len(failed) <= 64:
        return Flash(failure_message(failed), ok=False)
    return None


async def subscription_rows(request: web.Request, principal: Principal) -> mirror.SubscriptionRows:
    """The customer's subscriptions as the mirror has them, through the mirror cache
    (``mirror_cache``: fresh within milliseconds of billing-sync's commit)."""
    pool, site_id, customer_id = request.app[DB_POOL], principal.site_id, principal.customer_id
    return await request.app[MIRROR_CACHE].read(
        site_id,
        customer_id,
        "subscriptions",
        lambda: mirror.subscription_rows(pool, site_id, customer_id),
    )


async def plan(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _require_section(principal, "plan")
    now = utcnow()
    try:
        rows = await subscription_rows(request, principal)
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="plan", error=type(exc).__name__)
        return render(
            request,
            "plan.html",
            current="plan",
            plans=[],
            load_error=True,
            flash=flash(request),
            can_cancel=allowed(principal, "subscriptions", "allow_cancel"),
        )
    # The flash comes from the query string and the permission from the session, both
    # part of the memo key (pages.memo_key).
    return render_memoized(
        request,
        "plan.html",
        rows,
        now,
        lambda: {
            "current": "plan",
            "plans": [presenters.plan_view(s, now) for s in mirror.decode_subscriptions(rows)],
            "load_error": False,
            "flash": flash(request),
            "can_cancel": allowed(principal, "subscriptions", "allow_cancel"),
        },
    )


def _page_number(request: web.Request) -> int:
    raw = request.query.getall("page", [])
    if not raw:
        return 1
    if len(raw) > 1 or not raw[0].isascii() or not raw[0].isdigit() or len(raw[0]) > 6:
        raise PageError(400, "bad_request")
    return max(1, int(raw[0]))


async def invoices(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _require_section(principal, "invoices")
    page_number = _page_number(request)
    now = utcnow()
    error = False
    page: mirror.InvoicePage | None = None
    views: list[presenters.InvoiceView] = []
    try:
        page = await mirror.invoices(
            request.app[DB_POOL],
            principal.site_id,
            principal.customer_id,
            page=page_number,
            per_page=INVOICES_PER_PAGE,
        )
        views = [presenters.invoice_view(i, now) for i in page.invoices]
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="invoices", error=type(exc).__name__)
        error = True
    if page is not None and page_number > page.pages:
        raise PageError(404, "not_found")
    notice, refresh = flash(request), None
    awaiting = request.query.get("awaiting")
    if awaiting and not error:
        notice, refresh = await _payment_state(request, principal, awaiting)
    return render(
        request,
        "invoices.html",
        current="invoices",
        invoices=views,
        page=page,
        load_error=error,
        flash=notice,
        hand_over=await _hand_over(request, principal),
        refresh_url=refresh,
    )


async def _payment_state(
    request: web.Request, principal: Principal, invoice_id: str
) -> tuple[Flash | None, str | None]:
    """Back from paying on Stripe's hosted invoice page: paid (once the mirror has it), or
    still waiting (look again), or, after ``UPDATE_POLLS`` looks, nothing more to say."""
    found = None
    if len(invoice_id) <= 255:
        found = await mirror.invoice(
            request.app[DB_POOL], principal.site_id, principal.customer_id, invoice_id
        )
    if found is None:
        return None, None
    if found.status == "paid":
        return Flash(done_message("paid") or "", ok=True, action=DONE_ACTIONS["paid"]), None
    n = _try(request)
    if n >= UPDATE_POLLS:
        return None, None
    prefix = credentials.prefix(principal.embedded, principal.token)
    refresh = f"{prefix}/invoices?" + urlencode({"awaiting": invoice_id, "try": n + 1})
    return Flash(_("Waiting for your payment on the secure page…"), ok=True), refresh


def _try(request: web.Request) -> int:
    tries = request.query.get("try", "0")
    return int(tries) if tries.isascii() and tries.isdigit() and len(tries) < 4 else 0


async def _hand_over(request: web.Request, principal: Principal) -> presenters.InvoiceView | None:
    """After a payment Stripe wants the customer for (3-D Secure, a decline): the invoice
    whose hosted page the customer completes it on (the mirror's URL, never one from
    the query string)."""
    invoice_id = request.query.get("invoice")
    if not invoice_id or "failed" not in request.query or len(invoice_id) > 255:
        return None
    try:
        found = await mirror.invoice(
            request.app[DB_POOL], principal.site_id, principal.customer_id, invoice_id
        )
    except Exception as exc:
        log.warning("mirror_read_failed", section="invoices", error=type(exc).__name__)
        return None
    if found is None:
        return None
    view = presenters.invoice_view(found, utcnow())
    return view if view.view_url and found.status not in ("paid", "void") else None


async def payment_methods(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _require_section(principal, "payment-methods")
    views: list[presenters.PaymentMethodView] = []
    error = False
    try:
        found = await mirror.payment_methods(
            request.app[DB_POOL], principal.site_id, principal.customer_id
        )
        views = [presenters.payment_method_view(pm) for pm in found]
        subs = [
            presenters.plan_view(s, utcnow())
            for s in mirror.decode_subscriptions(await subscription_rows(request, principal))
        ]
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="payment_methods", error=type(exc).__name__)
        error = True
        subs = []
    notice, updating, refresh = flash(request), False, None
    if not error and request.query.get("updated") == "1":
        notice, updating, refresh = _card_update_state(request, principal, views)
    return render(
        request,
        "payment_methods.html",
        current="payment-methods",
        methods=views,
        load_error=error,
        flash=notice,
        updating=updating,
        refresh_url=refresh,
        can_update=allowed(principal, "payment_methods", "allow_update"),
        auto_pay=[s for s in subs if s.auto_pay is not None],
    )


def _card_update_state(
    request: web.Request, principal: Principal, views: list[presenters.PaymentMethodView]
) -> tuple[Flash | None, bool, str | None]:
    """Back from Stripe's card page: has the mirror caught up? billing-sync makes the new
    card the default when Stripe reports the checkout complete, a moment after the
    customer is sent back. Until the default differs from the one before (``was``), say
    "Updating…" and look again (a meta refresh, so it works without script), never show
    the old card as if nothing happened; after ``UPDATE_POLLS`` looks, say it is still
    on its way."""
    was = request.query.get("was", "")
    default = next((v.id for v in views if v.is_default), "")
    flow_done = bool(principal.flow and principal.flow.get("type") == "payment_method_update")
    if default and default != was:
        added = Flash(
            done_message("card_added") or "",
            ok=True,
            flow_done=flow_done,
            action=DONE_ACTIONS["card_added"],
        )
        return added, False, None
    n = _try(request)
    if n >= UPDATE_POLLS:
        return (
            Flash(
                _("Your new card is still being processed. It will appear here shortly."), ok=True
            ),
            False,
            None,
        )
    prefix = credentials.prefix(principal.embedded, principal.token)
    refresh = f"{prefix}/payment-methods?" + urlencode({"updated": "1", "was": was, "try": n + 1})
    return None, True, refresh


async def usage(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _require_section(principal, "usage")
    views: list[presenters.UsageView] = []
    error = False
    try:
        found = await mirror.usage(request.app[DB_POOL], principal.site_id, principal.customer_id)
        views = [presenters.usage_view(u) for u in found]
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="usage", error=type(exc).__name__)
        error = True
    return render(request, "usage.html", current="usage", meters=views, load_error=error)


async def profile(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    _require_section(principal, "profile")
    view: presenters.ProfileView | None = None
    error = False
    try:
        found = await mirror.profile(request.app[DB_POOL], principal.site_id, principal.customer_id)
        view = presenters.profile_view(found) if found is not None else None
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="profile", error=type(exc).__name__)
        error = True
    return render(
        request,
        "profile.html",
        current="profile",
        profile=view,
        load_error=error or view is None,
        flash=flash(request),
        can_edit=allowed(principal, "profile", "allow_edit"),
    )


async def sign_out(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not credentials.same_origin_post(request, settings):
        raise PageError(403, "forbidden")
    principal = await authenticate(request)
    form = await request.post()
    csrf = form.get("csrf")
    if not credentials.csrf_ok(principal.token, csrf if isinstance(csrf, str) else None):
        raise PageError(403, "forbidden")
    await browser_sessions.end(request.app[DB_POOL], principal)
    await request.app[VALIDATOR].forget(principal.token)
    request.pop(PRINCIPAL)
    raise PageError(200, "signed_out", return_url=principal.return_url)


def add_routes(app: web.Application) -> None:
    for base in (credentials.TOP_PREFIX, credentials.FRAME_PREFIX + "/{token}"):
        app.router.add_get(base + "/", home)
        app.router.add_get(base + "/plan", plan)
        app.router.add_get(base + "/invoices", invoices)
        app.router.add_get(base + "/payment-methods", payment_methods)
        app.router.add_get(base + "/usage", usage)
        app.router.add_get(base + "/profile", profile)
        app.router.add_post(base + "/sign-out", sign_out)
    assert {slug for slug, _ in SECTIONS} == {
        "plan",
        "invoices",
        "payment-methods",
        "usage",
        "profile",
    }
