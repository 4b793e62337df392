"""How the browser carries its browser session: a cookie at top level, the URL inside a frame.

Top level: a ``HttpOnly; SameSite=Lax`` cookie, ``Secure`` unless the portal's own base
URL is plain-http localhost (with ``__Host-`` prefix when Secure, so no subdomain can set
or shadow it). Pages live under ``/p/``.

Inside an iframe on the tenant's site the portal is third-party, and browsers that block
third-party cookies (Safari blocks all of them in frames) would drop the cookie. So the
framed flow carries the token in the URL path instead: pages live under ``/e/{bfs_…}/``
and every link and form in the frame is built from that prefix. No cookie is set or
read for it. Risks and mitigations are in docs/ARCHITECTURE.md ("Embedding").
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from billfold import tokens
from billfold.settings import Settings

TOP_PREFIX = "/p"
FRAME_PREFIX = "/e"
API_PREFIX = "/api/portal/v1"  # the JSON API, at top level and under a frame's prefix


def is_api(path: str) -> bool:
    """A JSON API path (top level or framed): answered in JSON, never with a page."""
    if path.startswith(API_PREFIX + "/"):
        return True
    if path.startswith(FRAME_PREFIX + "/"):
        _, _, rest = path[len(FRAME_PREFIX) + 1 :].partition("/")
        return ("/" + rest).startswith(API_PREFIX + "/")
    return False


def insecure_localhost(settings: Settings) -> bool:
    """Plain http on a loopback host: the only case where cookies are not ``Secure``."""
    return _insecure_localhost(settings.portal_base_url)


@lru_cache(maxsize=16)  # asked on every request (the cookie's name); one base URL
def _insecure_localhost(base_url: str) -> bool:
    parts = urlsplit(base_url)
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")


SESSION_COOKIE = "bf_session"


def cookie_name(settings: Settings, base: str = SESSION_COOKIE) -> str:
    return base if insecure_localhost(settings) else f"__Host-{base}"


def set_cookie(
    response: web.StreamResponse,
    settings: Settings,
    token: str,
    max_age: int,
    *,
    base: str = SESSION_COOKIE,
) -> None:
    response.set_cookie(
        cookie_name(settings, base),
        token,
        max_age=max(0, max_age),
        path="/",
        httponly=True,
        secure=not insecure_localhost(settings),
        samesite="Lax",
    )


def clear_cookie(response: web.StreamResponse, settings: Settings) -> None:
    response.del_cookie(
        cookie_name(settings),
        path="/",
        secure=not insecure_localhost(settings),
        httponly=True,
        samesite="Lax",
    )


# A browser sends the same Cookie header on every request of its session: the cookie
# asked for, by (header, name), so that each header is parsed once, not per request.
# Only short headers (ours hold one or two cookies), at most _COOKIE_MEMO_SIZE of them.
_COOKIE_MEMO: dict[tuple[str, str], str | None] = {}
_COOKIE_MEMO_SIZE = 4096
_COOKIE_MEMO_MAX_HEADER = 1024


def cookie_token(request: web.Request, settings: Settings) -> str | None:
    name = cookie_name(settings)
    header = request.headers.get(hdrs.COOKIE)
    if header is None:
        return None
    if len(header) > _COOKIE_MEMO_MAX_HEADER:
        return request.cookies.get(name)
    key = (header, name)
    try:
        return _COOKIE_MEMO[key]
    except KeyError:
        pass
    value = request.cookies.get(name)  # aiohttp's parser: the memo changes no answer
    if len(_COOKIE_MEMO) >= _COOKIE_MEMO_SIZE:
        _COOKIE_MEMO.clear()
    _COOKIE_MEMO[key] = value
    return value


def prefix(embedded: bool, token: str) -> str:
    """The URL prefix of every portal page for this browser session."""
    return f"{FRAME_PREFIX}/{token}" if embedded else TOP_PREFIX


def wants_frame(request: web.Request, form_flag: bool) -> bool:
    """Is this navigation inside a frame? ``Sec-Fetch-Dest`` says so in current browsers;
    our script's hidden field says so where that header is missing."""
    dest = request.headers.get("Sec-Fetch-Dest")
    if dest is not None:
        return dest in ("iframe", "frame")
    return form_flag


def csrf_token(token: str) -> str:
    """The CSRF token of a browser session: derived from its secret, so nothing is stored
    and it changes with the session; useless without the session it belongs to."""
    return hmac.new(token.encode("utf-8"), b"billfold-csrf", hashlib.sha256).hexdigest()[:40]


def csrf_ok(token: str, submitted: str | None) -> bool:
    return submitted is not None and tokens.same(csrf_token(token), submitted)


def same_origin_post(request: web.Request, settings: Settings) -> bool:
    """A state-changing request must come from our own pages: ``Sec-Fetch-Site`` (or,
    without it, ``Origin``) must not name another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.rstrip("/") == _origin(settings.portal_base_url)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
