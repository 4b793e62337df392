"""Test runs never get in each other's way: each has its own database, vhost and Redis
prefix, teardown removes all three, and a crashed run's leftovers are cleaned later."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import asyncpg
import redis

from billfold.settings import Settings
from billfold_testing import infra


def _databases(base: Settings) -> set[str]:
    async def names() -> set[str]:
        conn = await asyncpg.connect(infra._with_path(base.database_url, "/postgres"))
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database")
            return {r["datname"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(names())


def _vhosts() -> set[str]:
    exe = shutil.which("rabbitmqctl")
    assert exe is not None
    out = subprocess.run(
        [exe, "-q", "list_vhosts"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def test_two_slices_are_disjoint_and_teardown_removes_everything() -> None:
    base = Settings()
    first, second = infra.create_slice(base), infra.create_slice(base)
    try:
        assert first.name != second.name
        assert first.settings.database_url != second.settings.database_url
        assert first.settings.amqp_url != second.settings.amqp_url
        assert first.settings.redis_prefix != second.settings.redis_prefix
        assert {first.name, second.name} <= _databases(base)
        assert {first.name, second.name} <= _vhosts()
        client = redis.Redis.from_url(base.redis_url)
        client.set(first.settings.redis_prefix + "probe", "1")
        client.set(second.settings.redis_prefix + "probe", "1")
    finally:
        infra.destroy_slice(first)
    try:
        assert first.name not in _databases(base)
        assert first.name not in _vhosts()
        assert client.get(first.settings.redis_prefix + "probe") is None
        # The other run's slice is untouched by this teardown.
        assert second.name in _databases(base)
        assert client.get(second.settings.redis_prefix + "probe") == b"1"
    finally:
        infra.destroy_slice(second)
        client.close()


def test_a_crashed_runs_old_database_is_dropped_by_the_next_run() -> None:
    base = Settings()
    stale = f"{infra.PREFIX}{int(time.time()) - infra.STALE_AFTER - 60}_dead00"
    fresh = f"{infra.PREFIX}{int(time.time()) - 60}_live00"

    async def create(*names: str) -> None:
        conn = await asyncpg.connect(infra._with_path(base.database_url, "/postgres"))
        try:
            for name in names:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create(stale, fresh))
    piece = infra.create_slice(base)
    try:
        names = _databases(base)
        assert stale not in names
        assert fresh in names  # a run still going (or just ended) keeps its database
    finally:
        infra.destroy_slice(piece)
        asyncio.run(infra._drop_database(base, fresh))
