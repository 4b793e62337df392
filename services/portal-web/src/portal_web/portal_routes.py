"""The portal's pages: Plan, Invoices, Payment methods, Usage, Profile (read only so
far: the actions come through billing-sync's RPC), and sign-out.

Every page first authenticates the browser session (``_principal``): from the cookie
under ``/p/``, from the path under ``/e/{bfs_…}/``. A section the session hides answers
404 whatever the HTML shows; an action it does not allow answers 403.
"""

from __future__ import annotations

from aiohttp import web

from billfold.db import DB_POOL
from billfold.logs import get_logger
from portal_web import browser_sessions, credentials, hosts, mirror, presenters
from portal_web.browser_sessions import Principal, Refusal, Refused
from portal_web.ids import utcnow
from portal_web.pages import SECTIONS, PageError, activate_locale, enabled_sections, render
from portal_web.state import PRINCIPAL, SETTINGS, SITE, SITES, VALIDATOR

log = get_logger("portal_web.portal")
routes = web.RouteTableDef()

INVOICES_PER_PAGE = 12
_REFUSED = {
    Refusal.UNKNOWN: "session_ended",
    Refusal.EXPIRED: "session_expired",
    Refusal.REVOKED: "session_revoked",
}


async def _principal(request: web.Request) -> Principal:
    settings = request.app[SETTINGS]
    path_token = request.match_info.get("token")
    token = path_token if path_token is not None else credentials.cookie_token(request, settings)
    if token is None:
        raise PageError(401, "session_ended")
    result = await request.app[VALIDATOR].validate(token, utcnow())
    pool = request.app[DB_POOL]
    if isinstance(result, Refused):
        if result.site_id is not None:
            site = await request.app[SITES].get(pool, result.site_id)
            if site is not None:
                request[SITE] = site
        status = 410 if result.reason is not Refusal.UNKNOWN else 401
        raise PageError(status, _REFUSED[result.reason], return_url=result.return_url)
    # A token only works the way it was handed out: a framed session's token is never a
    # cookie, a top-level session's never a path; and a framed URL opened as a top-level
    # page (a leaked URL pasted into the address bar) is refused where the browser says so.
    if result.embedded != (path_token is not None) or (
        result.embedded and request.headers.get("Sec-Fetch-Dest") == "document"
    ):
        raise PageError(401, "session_ended")
    hosts.check_site(request, result.site_id)
    site = await request.app[SITES].get(pool, result.site_id)
    if site is None:
        raise PageError(401, "session_ended")
    request[SITE] = site
    request[PRINCIPAL] = result
    activate_locale(request, result.locale, site)
    return result


# For middlewares that must know the session before the handler (portal_web.preview).
authenticate = _principal


def _require_section(principal: Principal, slug: str) -> None:
    if slug not in enabled_sections(principal):
        raise PageError(404, "not_found")


def require_action(principal: Principal, section: str, flag: str) -> None:
    """A disallowed action is a 403, whatever the page offered."""
    if principal.preview:
        raise PageError(403, "preview")
    if not principal.sections.get(section, {}).get(flag):
        raise PageError(403, "forbidden")


async def home(request: web.Request) -> web.StreamResponse:
    principal = await _principal(request)
    sections = enabled_sections(principal)
    prefix = credentials.prefix(principal.embedded, principal.token)
    if not sections:
        return render(request, "empty.html")
    return web.Response(status=303, headers={"Location": f"{prefix}/{sections[0]}"})


async def plan(request: web.Request) -> web.StreamResponse:
    principal = await _principal(request)
    _require_section(principal, "plan")
    now = utcnow()
    error = False
    views: list[presenters.PlanView] = []
    try:
        subs = await mirror.subscriptions(
            request.app[DB_POOL], principal.site_id, principal.customer_id
        )
        views = [presenters.plan_view(s, now) for s in subs]
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="plan", error=type(exc).__name__)
        error = True
    return render(request, "plan.html", current="plan", plans=views, load_error=error)


def _page_number(request: web.Request) -> int:
    raw = request.query.getall("page", [])
    if not raw:
        return 1
    if len(raw) > 1 or not raw[0].isascii() or not raw[0].isdigit() or len(raw[0]) > 6:
        raise PageError(400, "bad_request")
    return max(1, int(raw[0]))


async def invoices(request: web.Request) -> web.StreamResponse:
    principal = await _principal(request)
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
    return render(
        request,
        "invoices.html",
        current="invoices",
        invoices=views,
        page=page,
        load_error=error,
    )


async def payment_methods(request: web.Request) -> web.StreamResponse:
    principal = await _principal(request)
    _require_section(principal, "payment-methods")
    views: list[presenters.PaymentMethodView] = []
    error = False
    try:
        found = await mirror.payment_methods(
            request.app[DB_POOL], principal.site_id, principal.customer_id
        )
        views = [presenters.payment_method_view(pm) for pm in found]
    except Exception as exc:  # the mirror cannot be read: say so, keep the page
        log.warning("mirror_read_failed", section="payment_methods", error=type(exc).__name__)
        error = True
    return render(
        request, "payment_methods.html", current="payment-methods", methods=views, load_error=error
    )


async def usage(request: web.Request) -> web.StreamResponse:
    principal = await _principal(request)
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
    principal = await _principal(request)
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
        request, "profile.html", current="profile", profile=view, load_error=error or view is None
    )


async def sign_out(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not credentials.same_origin_post(request, settings):
        raise PageError(403, "forbidden")
    principal = await _principal(request)
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
