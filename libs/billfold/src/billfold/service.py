"""Running a service: the one place that picks the event loop and binds the port."""

from __future__ import annotations

import asyncio
import gc

import uvloop
from aiohttp import web

from billfold.http import malformed
from billfold.settings import Settings

# CPython runs a young-generation collection every 700 net container allocations (its
# default), i.e. every request or two here, and each full collection walks every live
# object: 25-30 ms pauses every few seconds under load, all of it in the p99. Objects
# that exist once the app has started (modules, the app, pools, caches) live as long as
# the process, so they are frozen out of the collector's sight, and the young
# generation is collected less often; request garbage dies by reference counting.
# See docs/PERFORMANCE.md.
GC_GEN0_THRESHOLD = 10_000


async def _tune_gc(_: web.Application) -> None:
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, *thresholds[1:])


def run(app: web.Application, settings: Settings, port: int) -> None:
    # uvloop measurably speeds up every service (see docs/PERFORMANCE.md).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # After the cleanup contexts' start-up (registered first): pools and clients exist.
    app.on_startup.append(_tune_gc)
    # Requests aiohttp's parser refuses get our JSON 400, not a text/plain echo of the
    # raw line (API key included). App factories call it too, so tests see the same;
    # a second call does nothing.
    malformed.install(app)
    web.run_app(
        app,
        host=settings.host,
        port=port,
        access_log=None,  # our middleware writes one structured line per request
        print=None,
        shutdown_timeout=10,
    )
