"""An isolated slice of the real Postgres, RabbitMQ and Redis for one test run.

Each run gets its own database, its own RabbitMQ vhost and its own Redis key prefix, all
named ``billfold_test_<unix time>_<random>``, so concurrent runs (two developers, CI)
never see each other's rows, queues or keys. Teardown removes them; slices left by a run
that crashed are removed by the next run once they are older than ``STALE_AFTER``.
The vhost is made with rabbitmqctl, or through the management API when the broker is not
local (e.g. the compose stack's container).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import redis

from billfold import sealing
from billfold.db import apply_migrations
from billfold.settings import Settings

PREFIX = "billfold_test_"
STALE_AFTER = 6 * 3600


@dataclass
class Slice:
    name: str
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    notifier_private_key: str = field(default="", repr=False)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise FileNotFoundError("rabbitmqctl")
    # A fixed executable and arguments we build: no shell, no user input.
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603


def _management(method: str, amqp_url: str, path: str, body: bytes | None = None) -> None:
    """The RabbitMQ management HTTP API on the broker's host, port 15672.

    The fallback when the broker is not local (e.g. the compose stack's container),
    where rabbitmqctl cannot reach it.
    """
    parts = urlsplit(amqp_url)
    url = f"http://{parts.hostname or '127.0.0.1'}:15672/api/{path}"
    request = urllib.request.Request(url, data=body, method=method)
    credentials = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - our own broker
        pass


def _create_vhost(amqp_url: str, name: str) -> None:
    try:
        _rabbitmqctl("add_vhost", name)
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (FileNotFoundError, subprocess.CalledProcessError):
        user = unquote(urlsplit(amqp_url).username or "guest")
        _management("PUT", amqp_url, f"vhosts/{name}")
        perms = b'{"configure": ".*", "write": ".*", "read": ".*"}'
        _management("PUT", amqp_url, f"permissions/{name}/{user}", perms)


def _delete_vhost(amqp_url: str, name: str) -> None:
    try:
        _rabbitmqctl("delete_vhost", name)
    except (FileNotFoundError, subprocess.CalledProcessError):
        with contextlib.suppress(OSError):  # already gone, or nothing to reach
            _management("DELETE", amqp_url, f"vhosts/{name}")


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
    _create_vhost(base.amqp_url, name)
    amqp_url = _with_path(base.amqp_url, "/" + name)
    # A notifier key pair per run: producers seal to the public half, the notifier
    # under test opens with the private half (billfold.sealing).
    pair = sealing.generate_keypair()
    settings = base.model_copy(
        update={
            "database_url": database_url,
            "amqp_url": amqp_url,
            "redis_prefix": f"bft:{name}:",
            "log_format": "json",
            "notifier_public_key": pair.public,
        }
    )
    env = {
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_AMQP_URL": amqp_url,
        "BILLFOLD_REDIS_URL": settings.redis_url,
        "BILLFOLD_REDIS_PREFIX": settings.redis_prefix,
        "BILLFOLD_LOG_FORMAT": "json",
        "BILLFOLD_NOTIFIER_PUBLIC_KEY": pair.public,
        "BILLFOLD_NOTIFIER_PRIVATE_KEY": pair.private,
    }
    return Slice(name=name, settings=settings, env=env, notifier_private_key=pair.private)


def destroy_slice(piece: Slice) -> None:
    asyncio.run(_drop_database(piece.settings, piece.name))
    _delete_vhost(piece.settings.amqp_url, piece.name)
    client = redis.Redis.from_url(piece.settings.redis_url)
    try:
        keys = list(client.scan_iter(match=piece.settings.redis_prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
