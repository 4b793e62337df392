"""``/r/{token}``: the link a customer receives.

``GET`` looks without touching: mail scanners and chat unfurlers that prefetch links
never burn a single-use link. It answers a small page whose form continues by ``POST``
(our script submits it; without script it is a button). The ``POST`` consumes the link
(see ``links.consume``) and redirects into the portal: with a cookie at top level, with
the token in the path inside a frame. A multi-use link goes straight in on ``GET``.
"""

from __future__ import annotations

import math

from aiohttp import web

from billfold.db import DB_POOL
from billfold.http.client_ip import CLIENT_IP
from billfold.http.middlewares import REQUEST_ID
from billfold.logs import get_logger
from portal_web import credentials, hosts, links, recovery
from portal_web.ids import utcnow
from portal_web.pages import PageError, activate_locale, render
from portal_web.state import SETTINGS, SITE, SITES

log = get_logger("portal_web.links")
routes = web.RouteTableDef()

_REFUSALS = {
    links.LinkState.USED: "link_used",
    links.LinkState.EXPIRED: "link_expired",
    links.LinkState.REVOKED: "link_revoked",
}


async def _live_link(request: web.Request) -> links.Link:
    """The link if it can still be used; otherwise the page that says why (404/410)."""
    pool = request.app[DB_POOL]
    link = await links.lookup(pool, request.match_info["token"])
    if link is None:
        raise PageError(404, "link_unknown")
    hosts.check_site(request, link.site_id)
    site = await request.app[SITES].get(pool, link.site_id)
    if site is not None:
        request[SITE] = site
    activate_locale(request, link.locale, site)
    state = link.state(utcnow())
    if state is not links.LinkState.ACTIVE:
        raise PageError(
            410,
            _REFUSALS[state],
            return_url=link.return_url,
            sign_in_url=recovery.sign_in_url(site, link.flow),
        )
    return link


async def _enter(request: web.Request, link: links.Link, embedded: bool) -> web.StreamResponse:
    """Consume ``link`` and redirect into the portal; the "already used" page if another
    use won."""
    consumed = await links.consume(
        request.app[DB_POOL],
        link,
        ip=request.get(CLIENT_IP),
        user_agent=request.headers.get("User-Agent"),
        embedded=embedded,
        request_id=request.get(REQUEST_ID),
    )
    if consumed is None:
        # Lost the race for a single-use link, or revoked/expired since the lookup.
        again = await links.lookup(request.app[DB_POOL], request.match_info["token"])
        state = again.state(utcnow()) if again is not None else links.LinkState.REVOKED
        kind = _REFUSALS.get(state, "link_used")
        site = request.get(SITE)
        raise PageError(
            410,
            kind,
            return_url=link.return_url,
            sign_in_url=recovery.sign_in_url(site, link.flow),
        )
    log.info("link_used", session_id=link.session_id, embedded=embedded)
    settings = request.app[SETTINGS]
    location = credentials.prefix(embedded, consumed.token) + "/"
    response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
    if not embedded:
        max_age = math.floor((link.expires_at - utcnow()).total_seconds())
        credentials.set_cookie(response, settings, consumed.token, max_age)
    return response


@routes.get("/r/{token}")
async def show_link(request: web.Request) -> web.StreamResponse:
    link = await _live_link(request)
    # HEAD (aiohttp answers it with this handler) only looks, even for a multi-use link:
    # link checkers send it, and it must not create sessions or record uses.
    if not link.single_use and request.method == "GET":
        return await _enter(request, link, credentials.wants_frame(request, False))
    return render(request, "link.html")


@routes.post("/r/{token}")
async def use_link(request: web.Request) -> web.StreamResponse:
    if not credentials.same_origin_post(request, request.app[SETTINGS]):
        raise PageError(403, "forbidden")
    link = await _live_link(request)
    form = await request.post()
    return await _enter(request, link, credentials.wants_frame(request, form.get("frame") == "1"))
