"""Who is asking: the browser session behind a portal request, for pages and the API.

One place decides whether a credential is good and what it may see; the pages turn a
refusal into a branded page (``PageError``), the JSON API into a Stripe-shaped error.
"""

from __future__ import annotations

from aiohttp import web

from billfold.db import DB_POOL
from portal_web import credentials, hosts
from portal_web.browser_sessions import Principal, Refusal, Refused
from portal_web.ids import utcnow
from portal_web.pages import PageError, activate_locale
from portal_web.state import PRINCIPAL, SETTINGS, SITE, SITES, VALIDATOR

REFUSED_KINDS = {
    Refusal.UNKNOWN: "session_ended",
    Refusal.EXPIRED: "session_expired",
    Refusal.REVOKED: "session_revoked",
    Refusal.SINGLE_USE: "session_ended",
}


async def browser_principal(request: web.Request) -> Principal:
    """The live browser session of this request: from the path under ``/e/{bfs_…}/``,
    else from the cookie. Raises ``PageError`` (401, or 410 once revoked or expired)."""
    path_token = request.match_info.get("token")
    token = (
        path_token
        if path_token is not None
        else credentials.cookie_token(request, request.app[SETTINGS])
    )
    if token is None:
        raise PageError(401, "session_ended")
    result = await request.app[VALIDATOR].validate(token, utcnow())
    # A token only works the way it was handed out: a framed session's token is never a
    # cookie, a top-level session's never a path; and a framed URL opened as a top-level
    # page (a leaked URL pasted into the address bar) is refused where the browser says so.
    if isinstance(result, Principal) and (
        result.embedded != (path_token is not None)
        or (result.embedded and request.headers.get("Sec-Fetch-Dest") == "document")
    ):
        raise PageError(401, "session_ended")
    return await admit(request, result)


async def admit(request: web.Request, result: Principal | Refused) -> Principal:
    """Bind a validated credential to the request (site, principal, language), or raise
    the ``PageError`` that says why it was refused."""
    pool = request.app[DB_POOL]
    if isinstance(result, Refused):
        if result.site_id is not None:
            site = await request.app[SITES].get(pool, result.site_id)
            if site is not None:
                request[SITE] = site
        status = 401 if result.reason in (Refusal.UNKNOWN, Refusal.SINGLE_USE) else 410
        raise PageError(status, REFUSED_KINDS[result.reason], return_url=result.return_url)
    hosts.check_site(request, result.site_id)
    site = await request.app[SITES].get(pool, result.site_id)
    if site is None:
        raise PageError(401, "session_ended")
    request[SITE] = site
    request[PRINCIPAL] = result
    activate_locale(request, result.locale, site)
    return result
