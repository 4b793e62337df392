"""Security headers on every page: CSP, framing, referrer, HSTS, no sniffing.

The CSP allows only our own script and style files (no inline script or style, no
third-party host). ``frame-ancestors`` is the site's list of allowed origins when the
page belongs to a site that has one, else ``'none'``; the site is known once the
handler set ``request[SITE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from aiohttp import web

from billfold.settings import Settings
from portal_web.sites import Site
from portal_web.state import SITE

HSTS = "max-age=63072000; includeSubDomains"
_NOT_PAGES = ("/healthz", "/readyz", "/metrics")
_FOR_OTHER_SITES = "/js/"


def _origin_ok(origin: str) -> bool:
    parts = urlsplit(origin)
    return (
        parts.scheme in ("https", "http")
        and bool(parts.hostname)
        and not parts.path.strip("/")
        and not parts.query
        and all(c not in origin for c in " ;,'\"")
    )


@lru_cache(maxsize=4096)
def parent_origins(site: Site | None) -> tuple[str, ...]:
    """The origins that may frame the site's pages (its ``frame_ancestors``, checked):
    the only ones the framed portal ever posts a message to."""
    return tuple(o.rstrip("/") for o in (site.frame_ancestors if site else ()) if _origin_ok(o))


def frame_ancestors(site: Site | None) -> str:
    allowed = parent_origins(site)
    return " ".join(allowed) if allowed else "'none'"


def _logo_source(site: Site | None) -> str:
    """The logo's https origin, the one image host beside ours (the tenant's own)."""
    if site is None or not site.logo_url:
        return ""
    parts = urlsplit(site.logo_url)
    if parts.scheme != "https" or not parts.hostname or not _origin_ok(f"https://{parts.netloc}"):
        return ""
    return f" https://{parts.netloc}"


@lru_cache(maxsize=4096)  # per site (and its branding): every page sends it
def csp(site: Site | None) -> str:
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self'{_logo_source(site)}; connect-src 'self'; form-action 'self'; "
        f"base-uri 'none'; frame-ancestors {frame_ancestors(site)}"
    )


HeaderSetter = Callable[[web.Request, web.StreamResponse], None]


def header_setter(settings: Settings) -> HeaderSetter:
    """Sets the security headers on a page's response (or raised HTTP exception); the
    portal's middleware (``portal_web.middleware``) calls it on every response."""
    https = settings.portal_base_url.startswith("https://")

    def apply(request: web.Request, response: web.StreamResponse) -> None:
        if request.path in _NOT_PAGES:
            return
        site = request.get(SITE)
        h = response.headers
        h["Content-Security-Policy"] = csp(site)
        if frame_ancestors(site) == "'none'":
            h["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
        # Link and frame tokens are in our URLs: never send them anywhere.
        h["Referrer-Policy"] = "no-referrer"
        h["X-Content-Type-Options"] = "nosniff"
        # The drop-in script is for other sites' pages; everything else stays ours.
        if not request.path.startswith(_FOR_OTHER_SITES):
            h["Cross-Origin-Resource-Policy"] = "same-origin"
        if https:
            h["Strict-Transport-Security"] = HSTS

    return apply
