"""The JSON API for tenants who draw their own UI: ``/api/portal/v1/…``.

Every section of the portal, read only here (the write operations are added beside these
on the action layer), with the pages' enforcement: a hidden section answers exactly
what an unknown URL answers (404 ``route_not_found``). Errors are Stripe-shaped
(``billfold.http.errors``), as on the session API; the document is ``api_openapi``.

Credentials, one per request:

* the top-level browser session's cookie (same origin only: a state-changing request
  it authenticates must also carry ``X-CSRF-Token``, see ``require_write``);
* the framed browser session's token in the path, ``/e/{bfs_…}/api/portal/v1/…``, for
  a frame that has no cookie;
* ``Authorization: Bearer bfl_…``, a MULTI-USE link's own token, checked on every
  request like a browser session (a revoke or the expiry refuses the next request); a
  single-use link's token is spent on entering and is never a credential here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from billfold.db import DB_POOL
from billfold.http.errors import ApiError, from_http_exception
from billfold.http.responses import iso, json_response
from billfold.logs import get_logger
from portal_web import access, api_openapi, api_views, branding, credentials, mirror, presenters
from portal_web.browser_sessions import Principal, Refusal, Refused
from portal_web.i18n import current
from portal_web.ids import utcnow
from portal_web.pages import PageError, enabled_sections
from portal_web.state import SETTINGS, SITE, VALIDATOR

log = get_logger("portal_web.api")

PREFIX = credentials.API_PREFIX
FRAMED = credentials.FRAME_PREFIX + "/{token}"
CSRF_HEADER = "X-CSRF-Token"
INVOICES_PER_PAGE = 12
MAX_PER_PAGE = 100

_REALM = {"WWW-Authenticate": 'Bearer realm="billfold-portal"'}
_REFUSALS = {
    "session_expired": ("session_expired", "The portal session has expired."),
    "session_revoked": ("session_revoked", "The portal session was revoked."),
    "session_ended": (
        "session_invalid",
        "No valid portal session: send the portal's session cookie, use the framed path, "
        "or send a multi-use link's token as Authorization: Bearer.",
    ),
}


def _unauthenticated(code: str, message: str) -> ApiError:
    return ApiError(401, "authentication_error", code, message, headers=_REALM)


def _bearer(request: web.Request) -> str | None:
    """The Bearer token, if the request sends an Authorization header (exactly one)."""
    values = request.headers.getall("Authorization", [])
    if not values:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if len(values) > 1 or scheme.lower() != "bearer" or not token:
        raise _unauthenticated(
            "authorization_invalid", "Send one Authorization header: Bearer <multi-use link token>."
        )
    return token


async def authenticate(request: web.Request) -> Principal:
    """The request's principal (see the module docstring), or a 401 saying why not."""
    try:
        if "token" in request.match_info:  # the framed path
            return await access.browser_principal(request)
        token = _bearer(request)
        if token is None:
            if credentials.cookie_token(request, request.app[SETTINGS]) is None:
                raise _unauthenticated("authentication_required", _REFUSALS["session_ended"][1])
            return await access.browser_principal(request)
        result: Principal | Refused = await request.app[VALIDATOR].validate_link(token, utcnow())
        if isinstance(result, Refused) and result.reason is Refusal.SINGLE_USE:
            raise _unauthenticated(
                "link_single_use",
                "A single-use link's token is not a credential: it is spent when the link "
                "is opened. Create the portal session with single_use=false.",
            )
        return await access.admit(request, result)
    except PageError as exc:
        code, message = _REFUSALS.get(exc.kind, _REFUSALS["session_ended"])
        raise _unauthenticated(code, message) from None


def require_write(request: web.Request, principal: Principal) -> None:
    """What a state-changing API request must add to its credential: with a cookie (the
    one ambient credential), a same-origin request carrying ``X-CSRF-Token`` (the value
    ``GET …/session`` returns as ``csrf_token``). A Bearer or a framed path is not sent by
    the browser on its own, so it cannot be forged cross-site."""
    if principal.via_link or principal.embedded:
        return
    settings = request.app[SETTINGS]
    if not credentials.same_origin_post(request, settings) or not credentials.csrf_ok(
        principal.token, request.headers.get(CSRF_HEADER)
    ):
        raise ApiError(
            403,
            "permission_error",
            "csrf_invalid",
            f"A cookie-authenticated change must come from the portal's origin with the "
            f"{CSRF_HEADER} header (csrf_token from GET {PREFIX}/session).",
        )


def require_section(request: web.Request, principal: Principal, slug: str) -> None:
    """A hidden section is an unknown URL: the same 404 as any path we do not serve."""
    if slug not in enabled_sections(principal):
        raise from_http_exception(web.HTTPNotFound(), request.method, request.path)


def _ok(body: dict[str, Any]) -> web.Response:
    response = json_response(body)
    response.headers["Cache-Control"] = "no-store"  # a customer's billing data
    return response


def mirror_unavailable(section: str, exc: Exception) -> ApiError:
    log.warning("mirror_read_failed", section=section, error=type(exc).__name__, api=True)
    return ApiError(
        503,
        "api_error",
        "mirror_unavailable",
        "This information cannot be read right now; retry shortly.",
        headers={"Retry-After": "5"},
    )


def _how(principal: Principal) -> str:
    if principal.via_link:
        return "link"
    return "frame" if principal.embedded else "cookie"


# --- handlers -----------------------------------------------------------------------------


async def session(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    site = request[SITE]
    cookie = not principal.via_link and not principal.embedded
    return _ok(
        {
            "object": "portal_session",
            "id": principal.portal_session_id,
            "customer": principal.customer_id,
            "expires_at": iso(principal.expires_at),
            "locale": str(current().locale).replace("_", "-"),
            "return_url": principal.return_url,
            "authentication": _how(principal),
            "csrf_token": credentials.csrf_token(principal.token) if cookie else None,
            "sections": api_views.sections(principal.sections),
            "actions": api_views.actions(principal.sections),
            "site": {
                "name": site.name,
                "logo_url": presenters.hosted_link(site.logo_url),
                "support_email": site.support_email,
                "stylesheet": f"/brand/{site.id}/{branding.version(site)}.css",
                "colors": branding.colors(site),
            },
        }
    )


def _section(
    slug: str, read: Callable[[web.Request, Principal], Awaitable[dict[str, Any]]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        principal = await authenticate(request)
        require_section(request, principal, slug)
        return _ok(await read(request, principal))

    handler.__name__ = f"api_{slug.replace('-', '_')}"
    return handler


async def _subscriptions(request: web.Request, principal: Principal) -> dict[str, Any]:
    try:
        subs = await mirror.subscriptions(
            request.app[DB_POOL], principal.site_id, principal.customer_id
        )
    except Exception as exc:  # the mirror cannot be read: a retryable 503, not a 500
        raise mirror_unavailable("plan", exc) from None
    now = utcnow()
    return api_views.list_of(
        PREFIX + "/subscriptions", [api_views.subscription(s, now) for s in subs]
    )


def _positive(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.getall(name, [])
    if not raw:
        return default
    text = raw[0]
    if len(raw) > 1 or not text.isascii() or not text.isdigit() or len(text) > 6:
        raise ApiError(
            400,
            "invalid_request_error",
            "parameter_invalid",
            f"{name} must be given once, as a whole number from 1 to {maximum}.",
            name,
        )
    value = int(text)
    if not 1 <= value <= maximum:
        raise ApiError(
            400,
            "invalid_request_error",
            "parameter_invalid",
            f"{name} must be a whole number from 1 to {maximum}.",
            name,
        )
    return value


async def _invoices(request: web.Request, principal: Principal) -> dict[str, Any]:
    page_number = _positive(request, "page", 1, 999_999)
    per_page = _positive(request, "limit", INVOICES_PER_PAGE, MAX_PER_PAGE)
    try:
        page = await mirror.invoices(
            request.app[DB_POOL],
            principal.site_id,
            principal.customer_id,
            page=page_number,
            per_page=per_page,
        )
    except Exception as exc:  # the mirror cannot be read
        raise mirror_unavailable("invoices", exc) from None
    return api_views.invoice_list(page, per_page, utcnow(), PREFIX + "/invoices")


async def _payment_methods(request: web.Request, principal: Principal) -> dict[str, Any]:
    try:
        found = await mirror.payment_methods(
            request.app[DB_POOL], principal.site_id, principal.customer_id
        )
    except Exception as exc:  # the mirror cannot be read
        raise mirror_unavailable("payment_methods", exc) from None
    return api_views.list_of(
        PREFIX + "/payment-methods", [api_views.payment_method(pm) for pm in found]
    )


async def _usage(request: web.Request, principal: Principal) -> dict[str, Any]:
    try:
        found = await mirror.usage(request.app[DB_POOL], principal.site_id, principal.customer_id)
    except Exception as exc:  # the mirror cannot be read
        raise mirror_unavailable("usage", exc) from None
    return api_views.list_of(PREFIX + "/usage", [api_views.usage(u) for u in found])


async def _profile(request: web.Request, principal: Principal) -> dict[str, Any]:
    try:
        found = await mirror.profile(request.app[DB_POOL], principal.site_id, principal.customer_id)
    except Exception as exc:  # the mirror cannot be read
        raise mirror_unavailable("profile", exc) from None
    if found is None:  # not mirrored (yet), or deleted in Stripe
        raise ApiError(
            404, "invalid_request_error", "resource_missing", "No billing profile is available."
        )
    return api_views.profile(found)


# Section slug (the pages' URL and enforcement key) → reader, under the same path.
SECTION_READS: dict[str, Callable[[web.Request, Principal], Awaitable[dict[str, Any]]]] = {
    "plan": _subscriptions,
    "invoices": _invoices,
    "payment-methods": _payment_methods,
    "usage": _usage,
    "profile": _profile,
}
SECTION_PATHS = {
    "plan": "/subscriptions",
    "invoices": "/invoices",
    "payment-methods": "/payment-methods",
    "usage": "/usage",
    "profile": "/profile",
}


# --- cross-origin (a tenant's own page calling with a Bearer) ------------------------------

_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, PATCH",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


async def preflight(request: web.Request) -> web.StreamResponse:
    """Any origin may ASK: a preflight carries no credential and reveals nothing. Whether
    the answer may be read is decided per response (``cors_headers``)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return web.Response(status=204, headers={"Allow": "GET, POST, PATCH, OPTIONS"})
    return web.Response(status=204, headers={**_PREFLIGHT, "Access-Control-Allow-Origin": origin})


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A Bearer request from one of the site's own origins (its framing origins) may read
    the answer. Never with credentials (no ``Access-Control-Allow-Credentials``): a
    cookie is never honoured cross-origin."""
    origin = request.headers.get("Origin")
    site = request.get(SITE)
    if (
        origin is None
        or site is None
        or "Authorization" not in request.headers
        or not credentials.is_api(request.path)
    ):
        return
    if origin.rstrip("/") in {o.rstrip("/") for o in site.frame_ancestors}:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
        response.headers.add("Vary", "Origin")


def add_routes(app: web.Application) -> None:
    for base in ("", FRAMED):
        app.router.add_get(base + PREFIX + "/session", session)
        for slug, read in SECTION_READS.items():
            app.router.add_get(base + PREFIX + SECTION_PATHS[slug], _section(slug, read))
    for path in ("/session", *SECTION_PATHS.values()):
        app.router.add_route("OPTIONS", PREFIX + path, preflight)
    app.router.add_get(PREFIX + "/openapi.json", api_openapi.handler)
    app.on_response_prepare.append(cors_headers)
