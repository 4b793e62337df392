"""``/s/{site}``: sign in with an email and a one-time code, then pick an account.

1. ``GET /s/{site}``: the email form (``?next=invoices`` lands there after sign-in).
2. ``POST /s/{site}``: rate limits (``sign_in_limits``; fail closed), then one row
   (``login_requests.request``) and a redirect to the code form: the same answer and
   the same work whatever the email (see ``code_resolver`` for what happens behind).
3. ``POST /s/{site}/code``: the code; five tries per code, counted in Postgres.
4. One customer: straight into the portal. Several: ``/s/{site}/accounts``, the
   chooser, which also lets a signed-in customer switch accounts without a new code.

Every form here changes state before anyone is signed in, so there is no session to
derive a CSRF token from: ``same_origin_post`` (Sec-Fetch-Site / Origin) refuses forms
posted from other sites, and the chooser's POST additionally needs the sign-in cookie
(SameSite=Lax: never sent on a cross-site POST).

Inside a frame (the drop-in script, ``/js/v1/billfold.js``) there are no cookies at all
(third-party cookies blocked), so the same pages work without one: the login request
id already travels in the form; a request asked for inside a frame is marked
``embedded`` and its code is accepted only inside a frame (and a top-level request's
only at top level); the sign-in ends in the framed portal (``/e/{bfs_…}/``), and the
chooser's credential is the sign-in token in the frame's path
(``/s/{site}/e/{bfi_…}/accounts``), never a cookie. ``/s/{bf_pk_…}`` (a publishable
key instead of the slug) redirects to the site's slug. See docs/ARCHITECTURE.md
("Sign-in inside a frame").
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from billfold import tokens
from billfold.db import DB_POOL
from billfold.http.client_ip import CLIENT_IP
from billfold.logs import get_logger
from billfold.sections import with_site_defaults
from portal_web import access, browser_sessions, credentials, hosts, i18n, login_requests, sign_ins
from portal_web.browser_sessions import Principal
from portal_web.i18n import gettext as _
from portal_web.ids import utcnow
from portal_web.login_requests import Outcome
from portal_web.pages import SECTIONS, PageError, activate_locale, render
from portal_web.sign_in_limits import SIGN_IN_LIMITER, LimiterUnavailable
from portal_web.sites import Site
from portal_web.state import SETTINGS, SITE, SITES, VALIDATOR

log = get_logger("portal_web.sign_in")
routes = web.RouteTableDef()

_SECTION_SLUGS = {slug for slug, _key in SECTIONS}

_BY_PUBLISHABLE_KEY = """
SELECT s.slug FROM portal.api_keys k JOIN portal.sites s ON s.id = k.site_id
WHERE k.key_hash = $1 AND k.kind = 'publishable' AND k.revoked_at IS NULL
"""


async def _site(request: web.Request) -> Site:
    site = await request.app[SITES].by_slug(request.app[DB_POOL], request.match_info["site"])
    if site is None:
        raise PageError(404, "not_found")
    hosts.check_site(request, site.id)
    request[SITE] = site
    activate_locale(request, None, site)
    return site


def _next(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw in _SECTION_SLUGS else None


def _email_page(
    request: web.Request, site: Site, *, status: int = 200, email: str = "", **extra: Any
) -> web.Response:
    return render(
        request,
        "sign_in.html",
        status=status,
        action=f"/s/{site.slug}",
        email=email,
        next=_next(extra.pop("next", None) or request.query.get("next")),
        **{"error": None, "notice": None, **extra},
    )


def _code_page(
    request: web.Request, site: Site, request_id: str, *, status: int = 200, **extra: Any
) -> web.Response:
    return render(
        request,
        "sign_in_code.html",
        status=status,
        action=f"/s/{site.slug}/code",
        request_id=request_id,
        restart=f"/s/{site.slug}",
        **{"error": None, **extra},
    )


def _check_origin(request: web.Request) -> None:
    if not credentials.same_origin_post(request, request.app[SETTINGS]):
        raise PageError(403, "forbidden")


def _framed(request: web.Request, form: Any) -> bool:
    """Is this POST made inside a frame (``Sec-Fetch-Dest``, else our script's flag)?"""
    return credentials.wants_frame(request, form.get("frame") == "1")


@routes.get("/s/{site}")
async def email_form(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["site"]
    if ref.startswith(tokens.PUBLISHABLE_KEY_PREFIX):
        # The drop-in may name the site by its publishable key (public, like the slug).
        slug = None
        if len(ref) <= 128:
            slug = await request.app[DB_POOL].fetchval(_BY_PUBLISHABLE_KEY, tokens.hash_token(ref))
        if slug is None:
            raise PageError(404, "not_found")
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPSeeOther(f"/s/{slug}{query}")
    site = await _site(request)
    return _email_page(request, site)


@routes.post("/s/{site}")
async def request_code(request: web.Request) -> web.StreamResponse:
    _check_origin(request)
    site = await _site(request)
    form = await request.post()
    framed = _framed(request, form)
    raw = form.get("email")
    next_section = _next(form.get("next"))
    typed = raw if isinstance(raw, str) else ""
    email = login_requests.normalise_email(typed)
    if email is None:
        return _email_page(
            request,
            site,
            status=400,
            email=typed[:254],
            next=next_section,
            error=_("Enter an email address such as name@example.com."),
        )
    try:
        # The client behind our trusted proxies (BILLFOLD_TRUSTED_PROXIES), as the
        # access log sees it: behind an ingress, not the ingress's own address.
        ip = request.get(CLIENT_IP, request.remote)
        limited = await request.app[SIGN_IN_LIMITER].hit(site.id, email, ip)
    except LimiterUnavailable:
        return _email_page(
            request,
            site,
            status=503,
            email=typed,
            next=next_section,
            notice=_("Sign-in is unavailable right now. Please try again in a few minutes."),
        )
    if limited is not None:
        minutes = max(1, math.ceil(limited.retry_after / 60))
        response = _email_page(
            request,
            site,
            status=429,
            email=typed,
            next=next_section,
            notice=i18n.ngettext(
                "Too many sign-in codes were asked for. Try again in %(num)d minute.",
                "Too many sign-in codes were asked for. Try again in %(num)d minutes.",
                minutes,
            )
            % {"num": minutes},
        )
        response.headers["Retry-After"] = str(limited.retry_after)
        return response
    async with request.app[DB_POOL].acquire() as conn:
        request_id = await login_requests.request(
            conn,
            site_id=site.id,
            email=email,
            locale=i18n.current().language,
            next_section=next_section,
            ip=ip,
            embedded=framed,
        )
    return web.Response(
        status=303,
        headers={"Location": f"/s/{site.slug}/code?r={request_id}", "Cache-Control": "no-store"},
    )


@routes.get("/s/{site}/code")
async def code_form(request: web.Request) -> web.StreamResponse:
    site = await _site(request)
    request_id = request.query.get("r", "")
    if not request_id.startswith("lr_") or len(request_id) > 64:
        raise web.HTTPSeeOther(f"/s/{site.slug}")
    return _code_page(request, site, request_id)


@routes.post("/s/{site}/code")
async def check_code(request: web.Request) -> web.StreamResponse:
    _check_origin(request)
    site = await _site(request)
    form = await request.post()
    framed = _framed(request, form)
    request_id = form.get("r")
    raw_code = form.get("code")
    if not isinstance(request_id, str) or not request_id.startswith("lr_"):
        raise web.HTTPSeeOther(f"/s/{site.slug}")
    code = login_requests.normalise_code(raw_code) if isinstance(raw_code, str) else None
    pool = request.app[DB_POOL]
    # The attempt counter commits whatever the outcome: never raise inside.
    async with pool.acquire() as conn, conn.transaction():
        checked = await login_requests.verify(
            conn,
            site_id=site.id,
            request_id=request_id,
            code=code,
            now=utcnow(),
            embedded=framed,
        )
        opened: tuple[sign_ins.SignIn, str, list[sign_ins.Account]] | None = None
        if checked.outcome is Outcome.OK and checked.email is not None:
            found = await sign_ins.accounts(conn, site.id, checked.email, site.account_label_fields)
            if found:
                sign_in, token = await sign_ins.create(
                    conn,
                    login_request_id=request_id,
                    site_id=site.id,
                    email=checked.email,
                    ttl=site.sign_in_ttl,
                    embedded=framed,
                    several=len(found) > 1,
                )
                opened = (sign_in, token, found)
    if checked.outcome is Outcome.WRONG:
        return _code_page(
            request,
            site,
            request_id,
            status=400,
            error=i18n.ngettext(
                "That code is not right. You have %(num)d more try.",
                "That code is not right. You have %(num)d more tries.",
                checked.attempts_left,
            )
            % {"num": checked.attempts_left},
        )
    if opened is None:
        # Locked, expired, already used, unknown, or (after a right code) the customer
        # is gone since: a new code is the way on.
        notice = {
            Outcome.LOCKED: _("That code was entered wrongly too often. Ask for a new code."),
            Outcome.EXPIRED: _("That code has expired. Ask for a new code."),
        }.get(checked.outcome, _("That code can no longer be used. Ask for a new code."))
        return _email_page(request, site, status=400, next=checked.next_section, notice=notice)
    sign_in, token, found = opened
    log.info("signed_in", site=site.id, sign_in_id=sign_in.id, accounts=len(found))
    if len(found) == 1:
        return await _open_portal(
            request, site, sign_in, found[0].customer_id, checked.next_section, framed
        )
    if framed:
        # No cookie in a frame: the chooser's credential is the token in the path.
        location = _chooser_url(site, checked.next_section, token)
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
    response = web.Response(
        status=303,
        headers={"Location": _chooser_url(site, checked.next_section), "Cache-Control": "no-store"},
    )
    max_age = math.floor((sign_in.expires_at - utcnow()).total_seconds())
    sign_ins.set_cookie(response, request.app[SETTINGS], token, max_age)
    return response


def _chooser_url(site: Site, next_section: str | None, framed_token: str | None = None) -> str:
    suffix = f"?next={next_section}" if next_section else ""
    path = f"/e/{framed_token}/accounts" if framed_token else "/accounts"
    return f"/s/{site.slug}{path}{suffix}"


async def _open_portal(
    request: web.Request,
    site: Site,
    sign_in: sign_ins.SignIn,
    customer_id: str,
    next_section: str | None,
    framed: bool = False,
    previous_framed: str | None = None,
) -> web.StreamResponse:
    """A browser session for ``customer_id`` under ``sign_in``, replacing this browser's
    previous one (switching accounts), and the redirect into the portal: with a cookie
    at top level, with the token in the path inside a frame (no cookie set or read)."""
    settings = request.app[SETTINGS]
    pool = request.app[DB_POOL]
    previous = previous_framed if framed else credentials.cookie_token(request, settings)
    async with pool.acquire() as conn, conn.transaction():
        created = await browser_sessions.create(
            conn,
            portal_session_id=None,
            site_id=site.id,
            customer_id=customer_id,
            expires_at=sign_in.expires_at,
            embedded=framed,
            sign_in_id=sign_in.id,
            sections=with_site_defaults(site.default_sections),
        )
        if previous is not None:
            await conn.execute(
                "UPDATE web.browser_sessions SET ended_at = now() "
                "WHERE token_hash = $1 AND sign_in_id = $2 AND ended_at IS NULL",
                tokens.hash_token(previous),
                sign_in.id,
            )
    if previous is not None:
        await request.app[VALIDATOR].forget(previous)
    location = f"{credentials.prefix(framed, created.token)}/{next_section or ''}"
    response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
    if not framed:
        max_age = math.floor((sign_in.expires_at - utcnow()).total_seconds())
        credentials.set_cookie(response, settings, created.token, max_age)
    return response


async def _sign_in(request: web.Request, site: Site) -> sign_ins.SignIn:
    """The sign-in of the cookie, or (under ``/s/{site}/e/{bfi_…}/``) of the frame's
    path; a framed URL opened as a top-level page is refused as the portal's is."""
    path_token = request.match_info.get("token")
    if path_token is not None:
        if request.headers.get("Sec-Fetch-Dest") == "document":
            raise PageError(401, "session_ended")
        found = await sign_ins.by_token(request.app[DB_POOL], site.id, path_token, embedded=True)
        if found is None:
            raise PageError(401, "session_ended")
        return found
    found = await sign_ins.by_token(
        request.app[DB_POOL], site.id, sign_ins.cookie_token(request, request.app[SETTINGS])
    )
    if found is None:
        raise web.HTTPSeeOther(f"/s/{site.slug}")
    return found


@routes.get("/s/{site}/accounts")
@routes.get("/s/{site}/e/{token}/accounts")
async def chooser(request: web.Request) -> web.StreamResponse:
    site = await _site(request)
    sign_in = await _sign_in(request, site)
    token = request.match_info.get("token")
    found = await sign_ins.accounts(
        request.app[DB_POOL], site.id, sign_in.email, site.account_label_fields
    )
    return render(
        request,
        "accounts.html",
        action=_chooser_url(site, None, token),
        accounts=found,
        next=_next(request.query.get("next")),
    )


@routes.post("/s/{site}/accounts")
@routes.post("/s/{site}/e/{token}/accounts")
async def choose(request: web.Request) -> web.StreamResponse:
    _check_origin(request)
    site = await _site(request)
    sign_in = await _sign_in(request, site)
    form = await request.post()
    chosen = form.get("customer")
    found = await sign_ins.accounts(
        request.app[DB_POOL], site.id, sign_in.email, site.account_label_fields
    )
    # Only an account of this email on this site: anything else is "not found".
    if not isinstance(chosen, str) or chosen not in {a.customer_id for a in found}:
        raise PageError(404, "not_found")
    framed = request.match_info.get("token") is not None
    return await _open_portal(request, site, sign_in, chosen, _next(form.get("next")), framed)


# --- switching accounts inside a frame ------------------------------------------------
# The framed portal has no chooser cookie; its own browser session (the path token)
# names its sign-in, which lists the email's accounts. Choosing opens a new framed
# session and ends this one.


async def _framed_switch(request: web.Request) -> tuple[Site, Principal, list[sign_ins.Account]]:
    principal = await access.browser_principal(request)
    site = request[SITE]
    if principal.sign_in_id is None or not principal.several:
        raise PageError(404, "not_found")
    pool = request.app[DB_POOL]
    sign_in = await sign_ins.by_id(pool, site.id, principal.sign_in_id)
    if sign_in is None:
        raise PageError(401, "session_ended")
    found = await sign_ins.accounts(pool, site.id, sign_in.email, site.account_label_fields)
    return site, principal, found


@routes.get("/e/{token}/accounts")
async def framed_chooser(request: web.Request) -> web.StreamResponse:
    _, principal, found = await _framed_switch(request)
    return render(
        request,
        "accounts.html",
        action=f"{credentials.FRAME_PREFIX}/{principal.token}/accounts",
        accounts=found,
        next=None,
    )


@routes.post("/e/{token}/accounts")
async def framed_choose(request: web.Request) -> web.StreamResponse:
    _check_origin(request)
    site, principal, found = await _framed_switch(request)
    form = await request.post()
    csrf = form.get("csrf")
    if not credentials.csrf_ok(principal.token, csrf if isinstance(csrf, str) else None):
        raise PageError(403, "forbidden")
    chosen = form.get("customer")
    if not isinstance(chosen, str) or chosen not in {a.customer_id for a in found}:
        raise PageError(404, "not_found")
    sign_in = await sign_ins.by_id(request.app[DB_POOL], site.id, principal.sign_in_id or "")
    if sign_in is None:
        raise PageError(401, "session_ended")
    return await _open_portal(
        request, site, sign_in, chosen, None, framed=True, previous_framed=principal.token
    )
