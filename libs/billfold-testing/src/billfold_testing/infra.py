"""An isolated slice of the real Postgres, RabbitMQ and Redis for one test run.

Each run gets its own database, its own RabbitMQ vhost and its own Redis key prefix, all
named ``billfold_test_<unix time>_<random>``, so concurrent runs (two developers, CI)
never see each other's rows, queues or keys. Teardown removes them; slices left by a run
that crashed are removed by the next run once they are older than ``STALE_AFTER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from billfold.db import apply_migrations
from billfold.settings import Settings

PREFIX = "billfold_test_"
STALE_AFTER = 6 * 3600


@dataclass
class Slice:
    name: str
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise RuntimeError(
            "rabbitmqctl not found: tests need it to create an isolated RabbitMQ vhost"
        )
    # A fixed executable and arguments we build: no shell, no user input.
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603


async def _admin(base: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(_with_path(base.database_url, "/postgres"))


async def _create_database(base: Settings, name: str) -> None:
    conn = await _admin(base)
    try:
        cutoff = int(time.time()) - STALE_AFTER
        for row in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", PREFIX + "%"
        ):
            stamp = row["datname"][len(PREFIX) :].split("_", 1)[0]
            if stamp.isdigit() and int(stamp) < cutoff:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(base: Settings, name: str) -> None:
    conn = await _admin(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_slice(base: Settings | None = None) -> Slice:
    base = base or Settings()
    name = f"{PREFIX}{int(time.time())}_{secrets.token_hex(3)}"
    asyncio.run(_create_database(base, name))
    database_url = _with_path(base.database_url, "/" + name)
    apply_migrations(database_url)
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    amqp_url = _with_path(base.amqp_url, "/" + name)
    settings = base.model_copy(
        update={
            "database_url": database_url,
            "amqp_url": amqp_url,
            "redis_prefix": f"bft:{name}:",
            "log_format": "json",
        }
    )
    env = {
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_AMQP_URL": amqp_url,
        "BILLFOLD_REDIS_URL": settings.redis_url,
        "BILLFOLD_REDIS_PREFIX": settings.redis_prefix,
        "BILLFOLD_LOG_FORMAT": "json",
    }
    return Slice(name=name, settings=settings, env=env)


def destroy_slice(piece: Slice) -> None:
    asyncio.run(_drop_database(piece.settings, piece.name))
    with contextlib.suppress(subprocess.CalledProcessError):  # already gone
        _rabbitmqctl("delete_vhost", piece.name)
    client = redis.Redis.from_url(piece.settings.redis_url)
    try:
        keys = list(client.scan_iter(match=piece.settings.redis_prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
