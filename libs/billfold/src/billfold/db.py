"""Postgres: the asyncpg pool every service uses, and the migration runner.

Migrations are plain SQL files applied by yoyo-migrations (see docs/ARCHITECTURE.md for
why): each service ships its own folder for its own schema and registers it under the
``billfold.migrations`` entry-point group, so ``billfold migrate`` applies every
installed service's migrations without any service importing another.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Counter

from billfold.settings import Settings

Pool = asyncpg.Pool
Connection = asyncpg.Connection

DB_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("db_pool", asyncpg.Pool)
MIGRATIONS_GROUP = "billfold.migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON columns come back as Python objects, and go in from them.
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )


async def _no_reset(_: asyncpg.Connection) -> None:
    """Skip the release-time RESET ALL/UNLISTEN round trip.

    Safe only for pools whose connections never hold session state (no LISTEN, no
    advisory locks, no SET): every such need gets a dedicated connection instead.
    """


async def create_pool(
    settings: Settings, *, fast_reset: bool = True, **kwargs: Any
) -> asyncpg.Pool:
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min,
        "max_size": settings.db_pool_max,
        "init": _init_connection,
        "command_timeout": 30,
    }
    if fast_reset:
        options["reset"] = _no_reset
    options.update(kwargs)
    pool = await asyncpg.create_pool(settings.database_url, **options)
    assert pool is not None
    return pool


def pool_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry: the pool opens with the app and closes with it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        app[DB_POOL] = pool
        try:
            yield
        finally:
            await pool.close()

    return ctx


POOL_TIMEOUTS = Counter(
    "billfold_db_pool_acquire_timeouts_total",
    "Requests that found no free pool connection within the acquire timeout",
)


class PoolTimeout(TimeoutError):
    """No pool connection came free within the allowed wait: the pool is saturated.
    The HTTP error middleware answers it with a 503 and ``Retry-After``."""


class BoundedPool:
    """The service's pool, where waiting for a connection is bounded.

    asyncpg's ``Pool.acquire()`` waits forever by default, so a pool held by slow work
    would queue every other request (of every tenant) behind it. Request handlers take
    connections through this instead: after ``acquire_timeout`` seconds they get
    :class:`PoolTimeout`. It offers the pool's one-shot query methods too, so it can
    stand in for the pool wherever a query runs "on the pool".
    """

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[PoolConnectionProxy]:
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            POOL_TIMEOUTS.inc()
            raise PoolTimeout(
                f"no database connection free within {self.acquire_timeout:g} s"
            ) from None
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return await conn.execute(query, *args)


async def check(pool: asyncpg.Pool) -> None:
    """Readiness: the database answers a trivial query."""
    await pool.fetchval("SELECT 1")


# --- migrations -----------------------------------------------------------------------


def migration_dirs() -> list[Path]:
    """Every installed service's migration folder, in a stable order."""
    dirs: list[Path] = []
    for ep in sorted(entry_points(group=MIGRATIONS_GROUP), key=lambda e: e.name):
        path = ep.load()
        dirs.append(Path(path))
    return dirs


def _yoyo_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(("postgresql+psycopg", *parts[1:]))


def _admin_url(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "postgres"
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, "")), name


async def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it is missing. Returns True if created."""
    admin_url, name = _admin_url(database_url)
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # a concurrent runner won the race; fine
        return True
    finally:
        await conn.close()


# An arbitrary constant: the key of the advisory lock every ``billfold migrate`` takes.
MIGRATION_LOCK_KEY = 0x62696C6C666F6C64  # "billfold"


def apply_migrations(database_url: str, dirs: Iterable[Path] | None = None) -> list[str]:
    """Apply pending migrations; returns the ids applied (maybe none).

    Concurrent runners (two replicas of a Job, a developer and CI) serialise on a
    Postgres session-level advisory lock. Unlike yoyo's own lock row, it is released
    by the server when a runner dies, so a killed migration never wedges the next one;
    while we hold it, any yoyo lock row left by a crash is stale and safe to break.
    """
    from yoyo import get_backend, read_migrations

    sources = [str(d) for d in (dirs if dirs is not None else migration_dirs())]
    if not sources:
        return []
    backend = get_backend(_yoyo_url(database_url))
    try:
        backend.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY:d})")
        backend.connection.commit()
        backend.break_lock()
        migrations = read_migrations(*sources)
        with backend.lock(timeout=60):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
            return [m.id for m in pending]
    finally:
        backend.connection.close()  # also releases the advisory lock
