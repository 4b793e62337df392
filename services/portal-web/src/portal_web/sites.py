"""The site (tenant) a page belongs to: its branding, support email, framing origins.

Read from session-api's ``portal.sites`` (portal-web may read it; it never writes it)
and kept in process for a short while: branding changes rarely, and every page needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billfold.ttl_cache import MISS, TtlCache
from portal_web.dbtypes import Executor

CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    slug: str
    name: str
    logo_url: str | None
    primary_color: str | None
    accent_color: str | None
    support_email: str | None
    default_locale: str
    frame_ancestors: tuple[str, ...]
    # Email sign-in: the sections and lifetime it grants, the chooser's labels.
    sign_in_ttl: int = 3600
    account_label_fields: tuple[str, ...] = ("name", "email")
    # Left out of the hash (a dict has none; equality still compares it): a Site keys
    # per-site caches (CSP, brand version, the page memo).
    default_sections: dict[str, Any] = field(default_factory=dict, hash=False)


_SQL = """
SELECT id, slug, name, logo_url, primary_color, accent_color, support_email,
       default_locale, frame_ancestors, sign_in_ttl, account_label_fields, default_sections
FROM portal.sites WHERE id = $1
"""


class SiteCache:
    """Sites by id, each kept ``CACHE_SECONDS``: a branding change shows within that."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self._entries: TtlCache[str, Site | None] = TtlCache(ttl)
        self._slugs: dict[str, str] = {}

    async def get(self, db: Executor, site_id: str) -> Site | None:
        hit = self._entries.get(site_id)
        if hit is not MISS:
            return hit
        row = await db.fetchrow(_SQL, site_id)
        site = None
        if row is not None:
            site = Site(
                id=row["id"],
                slug=row["slug"],
                name=row["name"],
                logo_url=row["logo_url"],
                primary_color=row["primary_color"],
                accent_color=row["accent_color"],
                support_email=row["support_email"],
                default_locale=row["default_locale"],
                frame_ancestors=tuple(row["frame_ancestors"]),
                sign_in_ttl=row["sign_in_ttl"],
                account_label_fields=tuple(row["account_label_fields"]),
                default_sections=row["default_sections"],
            )
        self._entries.put(site_id, site)
        return site

    async def by_slug(self, db: Executor, slug: str) -> Site | None:
        """The site a public URL (``/s/{slug}``) names; slugs never change, so the id
        is kept for good and the site itself for ``ttl`` like any other."""
        if not slug.isascii() or len(slug) > 63:
            return None
        site_id = self._slugs.get(slug)
        if site_id is None:
            site_id = await db.fetchval("SELECT id FROM portal.sites WHERE slug = $1", slug)
            if site_id is None:
                return None
            if len(self._slugs) >= 10_000:
                self._slugs.clear()
            self._slugs[slug] = site_id
        return await self.get(db, site_id)
