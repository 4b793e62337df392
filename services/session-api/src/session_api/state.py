"""Typed application state shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from billfold.settings import Settings
from session_api.portal_sessions.batcher import CreateBatcher
from session_api.portal_sessions.link_index import Writer

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
LINK_INDEX: web.AppKey[Writer] = web.AppKey("link_index", Writer)
CREATE_BATCHER: web.AppKey[CreateBatcher] = web.AppKey("create_batcher", CreateBatcher)
