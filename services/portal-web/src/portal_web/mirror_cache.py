"""Mirror reads served from memory while Postgres says nothing changed.

billing-sync's triggers (``mirror_0007_change_notify``) NOTIFY ``mirror_changed`` with
``<site>:<customer>`` at the commit of every write to a mirror table the pages read. One
dedicated connection per process LISTENs (:class:`MirrorCache` ``run``) and bumps that
customer's generation. A cached read is served only while

- the listener is connected (LISTEN is in effect): during an outage every read goes to
  Postgres, so an outage costs speed, never freshness;
- the entry's generation is the customer's current one, taken BEFORE the query: a
  notification that arrives while the query runs leaves the entry stale-marked;
- the entry was made since the listener's last (re)connect (notifications sent while
  it was away are lost: a reconnect drops everything);
- it is younger than ``ttl`` seconds: a safety net, not the freshness mechanism.

So a page lags a commit by the notification's delivery (milliseconds). Actions through
billing-sync (which writes the mirror before replying) bump the customer's generation
locally too (``Actions.perform``), so the post/redirect/get after an action reads fresh
even if the notification is a moment behind the redirect.

Bounded: ``size`` entries (least recently used out first) and ``size`` generations (on
overflow all are dropped and the epoch moves on, which invalidates every entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from billfold.logs import get_logger
from billfold.settings import Settings

log = get_logger("portal_web.mirror_cache")

CHANNEL = "mirror_changed"
TTL_SECONDS = 30.0
SIZE = 4096
#: How often the listener proves its connection alive (a dead peer without a FIN would
#: otherwise leave us "connected" and serving entries no notification can invalidate).
PING_SECONDS = 5.0
PING_TIMEOUT = 2.0
MAX_BACKOFF = 10.0

T = TypeVar("T")
Key = tuple[str, str]  # (site id, customer id)


@dataclass(slots=True)
class _Entry:
    value: Any
    generation: int
    epoch: int
    made: float  # time.monotonic()


class MirrorCache:
    def __init__(self, *, ttl: float = TTL_SECONDS, size: int = SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[tuple[Key, Hashable], _Entry] = OrderedDict()
        self._generations: dict[Key, int] = {}
        self._clock = 0  # the last generation handed out
        self._epoch = 0  # moves on at every (re)connect and overflow
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        # For tests and operators.
        self.hits = 0
        self.reconnects = 0

    # --- the cache ---------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True while LISTEN is in effect: only then may an entry be served."""
        conn = self._conn
        return conn is not None and not conn.is_closed()

    @property
    def listener_pid(self) -> int | None:
        conn = self._conn
        return conn.get_server_pid() if conn is not None and not conn.is_closed() else None

    def generation(self, site_id: str, customer_id: str) -> int:
        return self._generations.get((site_id, customer_id), 0)

    def changed(self, site_id: str, customer_id: str) -> None:
        """The customer's mirror rows changed (a notification, or an action we made)."""
        key = (site_id, customer_id)
        if key not in self._generations and len(self._generations) >= self.size:
            self.clear()
        self._clock += 1
        self._generations[key] = self._clock

    def clear(self) -> None:
        self._entries.clear()
        self._generations.clear()
        self._epoch += 1

    async def read(
        self, site_id: str, customer_id: str, what: Hashable, load: Callable[[], Awaitable[T]]
    ) -> T:
        """``await load()`` (``what`` names the query), or its value from an earlier call
        while nothing of the customer's changed since (see the module docstring)."""
        if not self.listening:
            return await load()
        key = (site_id, customer_id)
        slot = (key, what)
        generation = self._generations.get(key, 0)  # before the query, never after
        epoch = self._epoch
        now = time.monotonic()
        entry = self._entries.get(slot)
        if (
            entry is not None
            and entry.generation == generation
            and entry.epoch == epoch
            and now - entry.made < self.ttl
        ):
            self._entries.move_to_end(slot)
            self.hits += 1
            value: T = entry.value
            return value
        value = await load()
        # Stored with the generation seen before the query: if a notification came in
        # meanwhile, the entry is already out of date and the next read misses.
        self._entries[slot] = _Entry(value, generation, epoch, now)
        self._entries.move_to_end(slot)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    # --- the listener --------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        site_id, sep, customer_id = str(payload).partition(":")
        if sep:
            self.changed(site_id, customer_id)
        else:  # not ours to parse: forget everything rather than guess
            self.clear()

    def _on_lost(self, _conn: object) -> None:
        self._lost.set()

    async def _connect(self, settings: Settings) -> None:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        try:
            conn.add_termination_listener(self._on_lost)
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        # Notifications may have been missed while not listening: nothing cached before
        # now may be served (the epoch moves on), then reads may cache again.
        self.clear()
        self._lost.clear()
        self._conn = conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def run(self, settings: Settings) -> None:
        """Keep a LISTEN connection up: reconnect with backoff, one warning per outage."""
        backoff = 0.1
        outage = False
        connected_before = False
        while True:
            try:
                await self._connect(settings)
            except Exception as exc:
                if not outage:
                    log.warning("mirror_listener_down", error=type(exc).__name__)
                    outage = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if connected_before:
                self.reconnects += 1
            if outage:
                log.info("mirror_listener_up")
            outage, backoff, connected_before = False, 0.1, True
            await self._watch()
            await self._close()
            log.warning("mirror_listener_down", error="connection_lost")
            outage = True

    async def _watch(self) -> None:
        """Return when the connection is lost (reported, or a ping fails)."""
        conn = self._conn
        assert conn is not None
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), PING_SECONDS)
                return
            try:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
            except Exception:
                return


MIRROR_CACHE: web.AppKey[MirrorCache] = web.AppKey("mirror_cache", MirrorCache)


def mirror_cache_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry: the cache, and its listener running with the app."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cache = app[MIRROR_CACHE]
        task = asyncio.create_task(cache.run(settings), name="mirror-listener")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await cache._close()

    return ctx
