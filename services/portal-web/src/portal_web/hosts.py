"""Custom domains: which site a ``Host`` serves, and refusing hosts we do not know.

The portal answers on its own host (``BILLFOLD_PORTAL_BASE_URL``, and loopback names)
and on each site's custom domains (``portal.site_domains``,
``billfold site domain add``). On a custom domain ``/`` is the site's sign-in, and only
that site's links, sign-in and sessions work there (another site's are "not found",
never a hint that they exist elsewhere). Any other host gets a 421 page: a DNS record
pointed at us by mistake (or on purpose) serves nothing. Health and metrics answer on
any host (probes use the pod's address). Cookies carry no ``Domain`` attribute (and
the ``__Host-`` prefix when Secure), so each host keeps its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from billfold.db import DB_POOL
from billfold.settings import Settings
from billfold.ttl_cache import MISS, TtlCache
from portal_web.dbtypes import Executor
from portal_web.pages import PageError

CACHE_SECONDS = 30.0
_ANY_HOST = ("/healthz", "/readyz", "/metrics", "/static/", "/brand/", "/js/")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})

# The site a custom domain serves, set on requests that came in on one.
DOMAIN_SITE: web.RequestKey[str] = web.RequestKey("domain_site", str)


class DomainCache:
    """Host → site id (None: unknown), each kept ``CACHE_SECONDS``."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self._entries: TtlCache[str, str | None] = TtlCache(ttl)

    async def site_of(self, db: Executor, host: str) -> str | None:
        hit = self._entries.get(host)
        if hit is not MISS:
            return hit
        site_id: str | None = await db.fetchval(
            "SELECT site_id FROM portal.site_domains WHERE domain = $1", host
        )
        self._entries.put(host, site_id)
        return site_id


DOMAINS: web.AppKey[DomainCache] = web.AppKey("domains", DomainCache)


def own_hosts(settings: Settings) -> frozenset[str]:
    """The base URL's host, and loopback names: no public DNS name can make a browser
    send those, and local runs and in-cluster checks use them."""
    host = (urlsplit(settings.portal_base_url).hostname or "").lower()
    return _LOOPBACK | {host}


def _host(request: web.Request) -> str:
    raw = (request.host or "").strip().lower()
    if raw.startswith("["):  # [::1]:8081
        return raw[1 : raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


def check_site(request: web.Request, site_id: str) -> None:
    """On a custom domain, only its own site's pages exist."""
    domain_site = request.get(DOMAIN_SITE)
    if domain_site is not None and domain_site != site_id:
        raise PageError(404, "not_found")


async def admit_host(request: web.Request, ours: frozenset[str]) -> None:
    """Let a request on one of ``ours`` (``own_hosts``) or a custom domain through;
    refuse an unknown host (421). On a custom domain, note its site (``DOMAIN_SITE``)
    and send ``/`` to the site's sign-in. Called first by the portal's middleware."""
    host = _host(request)
    if host in ours or request.path.startswith(_ANY_HOST):
        return
    site_id = await request.app[DOMAINS].site_of(request.app[DB_POOL], host)
    if site_id is None:
        raise PageError(421, "unknown_host")
    request[DOMAIN_SITE] = site_id
    if request.path == "/":
        slug = await request.app[DB_POOL].fetchval(
            "SELECT slug FROM portal.sites WHERE id = $1", site_id
        )
        raise web.HTTPSeeOther(f"/s/{slug}")
