"""Running a service: the one place that picks the event loop and binds the port."""

from __future__ import annotations

import asyncio

import uvloop
from aiohttp import web

from billfold.settings import Settings


def run(app: web.Application, settings: Settings, port: int) -> None:
    # uvloop measurably speeds up every service (see docs/PERFORMANCE.md).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        app,
        host=settings.host,
        port=port,
        access_log=None,  # our middleware writes one structured line per request
        print=None,
        shutdown_timeout=10,
    )
