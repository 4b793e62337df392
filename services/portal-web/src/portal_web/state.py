"""Typed application and request state shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from billfold.settings import Settings
from portal_web.browser_sessions import Principal, Validator
from portal_web.sites import Site, SiteCache

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
SITES: web.AppKey[SiteCache] = web.AppKey("sites", SiteCache)
VALIDATOR: web.AppKey[Validator] = web.AppKey("validator", Validator)

# Set by a handler once it knows them: the security headers (frame-ancestors) and error
# pages (branding, the way back) read them.
SITE: web.RequestKey[Site] = web.RequestKey("site", Site)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
