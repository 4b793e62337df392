"""Typed application state shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from billfold.db import BoundedPool
from billfold.settings import Settings
from session_api.portal_sessions.batcher import CreateBatcher
from session_api.portal_sessions.link_index import Writer

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
# The pool as request handlers use it: waiting for a connection is bounded (503 after
# settings.db_acquire_timeout), so no tenant's requests queue behind a saturated pool.
DB: web.AppKey[BoundedPool] = web.AppKey("db", BoundedPool)
LINK_INDEX: web.AppKey[Writer] = web.AppKey("link_index", Writer)
CREATE_BATCHER: web.AppKey[CreateBatcher] = web.AppKey("create_batcher", CreateBatcher)
