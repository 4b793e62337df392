"""Rendering: the common page context, and error pages instead of JSON for the browser.

Handlers raise :class:`PageError` (or let aiohttp raise its 404/405); the middleware
renders the branded page in the request's language, with a way back and never a word
about whose link or account it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from billfold.logs import get_logger
from billfold.rpc import new_call_id
from portal_web import branding, credentials, i18n, security, sign_ins
from portal_web.browser_sessions import Principal
from portal_web.i18n import gettext as _
from portal_web.sites import Site
from portal_web.state import PRINCIPAL, SETTINGS, SITE

log = get_logger("portal_web.pages")

_NOT_PAGES = ("/healthz", "/readyz", "/metrics", "/static/", "/brand/")

# Sections: URL slug → (sessions' settings key, nav label). Order is the nav's.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("plan", "subscriptions"),
    ("invoices", "invoices"),
    ("payment-methods", "payment_methods"),
    ("usage", "usage"),
    ("profile", "profile"),
)


def section_label(slug: str) -> str:
    return {
        "plan": _("Plan"),
        "invoices": _("Invoices"),
        "payment-methods": _("Payment methods"),
        "usage": _("Usage"),
        "profile": _("Profile"),
    }[slug]


def enabled_sections(principal: Principal) -> list[str]:
    return [slug for slug, key in SECTIONS if principal.sections.get(key, {}).get("enabled")]


@dataclass
class PageError(Exception):
    """An error page: ``kind`` picks the words (see ``_MESSAGES``)."""

    status: int
    kind: str
    return_url: str | None = None
    # A dead link's way back through email sign-in: /s/{site}?next=<section>.
    sign_in_url: str | None = None


def _messages(kind: str) -> tuple[str, str]:
    # Plain words; none of them names the customer or the account.
    return {
        "link_unknown": (
            _("This link doesn't work"),
            _("The link is not valid. Check that you copied all of it, or ask for a new one."),
        ),
        "link_used": (
            _("This link has already been used"),
            _("For your security, each link works only once. Ask for a new link to continue."),
        ),
        "link_expired": (
            _("This link has expired"),
            _("Links work for a limited time. Ask for a new link to continue."),
        ),
        "link_revoked": (
            _("This link is no longer valid"),
            _("The link was cancelled. Ask for a new link to continue."),
        ),
        "session_ended": (
            _("Your session has ended"),
            _("Open the billing portal again from the place that sent you here."),
        ),
        "session_revoked": (
            _("Your session was closed"),
            _("Access to this billing portal was withdrawn. Ask for a new link to continue."),
        ),
        "session_expired": (
            _("Your session has expired"),
            _("Sessions last a limited time. Open the billing portal again to continue."),
        ),
        "signed_out": (
            _("You are signed out"),
            _("You can close this page."),
        ),
        "unknown_host": (
            _("No billing portal here"),
            _("This address is not set up for a billing portal."),
        ),
        "not_found": (
            _("Page not found"),
            _("There is nothing at this address."),
        ),
        "forbidden": (
            _("Not allowed"),
            _("This action is not available in this session."),
        ),
        "preview": (
            _("This is a read-only preview"),
            _("Actions are turned off in a preview. Nothing was changed."),
        ),
        "bad_request": (
            _("Something went wrong"),
            _("The request could not be completed. Go back and try again."),
        ),
        "server_error": (
            _("Something went wrong"),
            _("This page can't be shown right now. Please try again in a few minutes."),
        ),
    }[kind]


def context(request: web.Request, **extra: Any) -> dict[str, Any]:
    """What every template gets: site, branding, language, the URL prefix, nav."""
    site = request.get(SITE)
    principal = request.get(PRINCIPAL)
    page_locale = i18n.current()
    ctx: dict[str, Any] = {
        "site": site,
        "lang": page_locale.language,
        "brand_css": (
            f"/brand/{site.id}/{branding.version(site)}.css" if site is not None else None
        ),
        "principal": principal,
        "prefix": (credentials.prefix(principal.embedded, principal.token) if principal else None),
        "csrf": credentials.csrf_token(principal.token) if principal else None,
        # Called once per action form: its own call id (``call_ids``), fresh each render.
        "new_call_id": _call_slot,
        "nav": (
            [(slug, section_label(slug)) for slug in enabled_sections(principal)]
            if principal
            else []
        ),
        "return_url": principal.return_url if principal else None,
        "embedded": bool(principal and principal.embedded),
        "switch_url": _switch_url(request, site, principal),
        # Where a framed page may post its messages (the drop-in's events): only these.
        "parent_origins": " ".join(security.parent_origins(site)),
        "current": None,
    }
    ctx.update(extra)
    return ctx


def _switch_url(request: web.Request, site: Site | None, principal: Principal | None) -> str | None:
    """The account chooser, for a signed-in customer whose email has several accounts
    (only then does the browser hold the sign-in cookie; in a frame, the sign-in says
    so)."""
    if principal is None or principal.sign_in_id is None or site is None:
        return None
    if principal.embedded:  # no cookie in a frame: the session's own path
        return (
            f"{credentials.FRAME_PREFIX}/{principal.token}/accounts" if principal.several else None
        )
    if sign_ins.cookie_token(request, request.app[SETTINGS]) is None:
        return None
    return f"/s/{site.slug}/accounts"


# Each action form's hidden call id (``call_ids``) must be new for every page served,
# also when the page comes from the memo: a memoized page with the ids of an earlier view
# would make a later, deliberate action (cancel, resume, cancel again) a "repeat" of the
# first one, which billing-sync answers without writing to Stripe. So templates write
# this marker (``new_call_id()``), and every page is filled with fresh ids as it is
# served, after the memo.
CALL_SLOT = "call_slot_e3b0c44298fc1c14"
_CALL_SLOT_BYTES = CALL_SLOT.encode("ascii")


def _call_slot() -> str:
    return CALL_SLOT


def fill_call_slots(body: bytes) -> bytes:
    """``body`` with a fresh call id in each form's slot (one per form)."""
    if _CALL_SLOT_BYTES not in body:
        return body
    parts = body.split(_CALL_SLOT_BYTES)
    out = [parts[0]]
    for part in parts[1:]:
        out.append(new_call_id().encode("ascii"))
        out.append(part)
    return b"".join(out)


def _render_unfilled(
    request: web.Request, template: str, status: int = 200, **extra: Any
) -> web.Response:
    response = aiohttp_jinja2.render_template(
        template, request, context(request, **extra), status=status
    )
    # Pages show a customer's billing data or carry tokens: never into a shared cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def render(request: web.Request, template: str, status: int = 200, **extra: Any) -> web.Response:
    response = _render_unfilled(request, template, status, **extra)
    if isinstance(response.body, bytes):
        response.body = fill_call_slots(response.body)
    return response


class PageMemo:
    """Rendered pages by everything they are made from (``memo_key``), the most recent
    ``size`` of them. Rendering is a pure function of those inputs and costs more than
    the rest of a request (Jinja, Babel); the inputs, mirror rows included, are looked up
    on every request, so a memoized page is never staler than a page rendered from the
    same rows (the rows themselves come through ``mirror_cache``: fresh within moments
    of billing-sync's commit).
    Bounded: at most ``size`` pages (tens of KB each) per process."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._pages: OrderedDict[Hashable, bytes] = OrderedDict()
        self.hits = 0

    def get(self, key: Hashable) -> bytes | None:
        body = self._pages.get(key)
        if body is not None:
            self._pages.move_to_end(key)
            self.hits += 1
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        self._pages[key] = body
        if len(self._pages) > self._size:
            self._pages.popitem(last=False)


PAGE_MEMO: web.AppKey[PageMemo] = web.AppKey("page_memo", PageMemo)
# Time enters a page only through "now" (a badge's "ended", "overdue by N days"): a
# memoized page is re-rendered at least once a minute.
MEMO_SECONDS = 60


def memo_key(request: web.Request, template: str, data: Hashable, now: datetime) -> Hashable:
    """Every input of ``render(request, template, …)`` besides ``data`` (the mirror rows
    the page is made from): the session (its nav, CSRF token, URL prefix, way back), the
    site (branding), the language, the query string and the minute."""
    principal = request.get(PRINCIPAL)
    return (
        template,
        data,
        str(i18n.current().locale),
        request.get(SITE),
        principal.id if principal else None,
        principal.token if principal else None,
        principal.embedded if principal else None,
        principal.return_url if principal else None,
        tuple(enabled_sections(principal)) if principal else (),
        request.query_string,
        int(now.timestamp()) // MEMO_SECONDS,
    )


def render_memoized(
    request: web.Request,
    template: str,
    data: Hashable,
    now: datetime,
    build: Callable[[], dict[str, Any]],
) -> web.Response:
    """``render(request, template, **build())``, or the same page rendered before from
    the same inputs (``memo_key``): ``build`` (the presenters) runs only on a miss."""
    memo = request.app[PAGE_MEMO]
    key = memo_key(request, template, data, now)
    body = memo.get(key)
    if body is None:
        response = _render_unfilled(request, template, **build())
        if isinstance(response.body, bytes):
            memo.put(key, response.body)
            response.body = fill_call_slots(response.body)
        return response
    response = web.Response(body=fill_call_slots(body), content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def activate_locale(request: web.Request, session_locale: str | None, site: Site | None) -> None:
    i18n.activate(
        i18n.negotiate(
            session_locale,
            request.headers.get("Accept-Language"),
            site.default_locale if site else None,
        )
    )


def error_page(request: web.Request, error: PageError) -> web.Response:
    if not i18n.is_active():  # the handler may have chosen it, knowing the session
        activate_locale(request, None, request.get(SITE))
    title, text = _messages(error.kind)
    response = render(
        request,
        "message.html",
        status=error.status,
        title=title,
        text=text,
        back_url=error.return_url,
        kind=error.kind,
        sign_in_url=error.sign_in_url,
    )
    if error.kind in ("session_ended", "session_revoked", "session_expired", "signed_out"):
        credentials.clear_cookie(response, request.app[SETTINGS])
    return response


def is_page(path: str) -> bool:
    """Answered with pages (errors too), not JSON or files."""
    return not path.startswith(_NOT_PAGES) and not credentials.is_api(path)


def page_for_exception(request: web.Request, exc: Exception) -> web.Response:
    """The error page for what a page's handler raised, or ``exc`` raised again (a
    redirect). Call it from an ``except`` block (the traceback of a bug is logged)."""
    if isinstance(exc, PageError):
        return error_page(request, exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        kind = {404: "not_found", 403: "forbidden"}.get(exc.status, "bad_request")
        status = exc.status if exc.status in (404, 403, 405, 413) else 400
        response = error_page(request, PageError(status, kind))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    # A bug or a dependency down (Postgres): a page in the customer's words, not the
    # JSON error the API middleware would give; the traceback goes to the log.
    log.exception(
        "page_failed",
        route=request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched",
    )
    try:
        return error_page(request, PageError(500, "server_error"))
    except Exception:  # rendering failed too: the JSON 500 below us
        log.exception("error_page_failed")
        raise
