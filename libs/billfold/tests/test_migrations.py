"""Migrations: applied once, safe to run twice and under concurrent runners."""

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from billfold.db import _admin_url, _yoyo_url, apply_migrations, ensure_database
from billfold.settings import Settings
from billfold_testing.infra import Slice


@pytest.fixture
def scratch_db(bf_slice: Slice) -> Iterator[str]:
    """A database of its own, not yet created, dropped afterwards."""
    url = bf_slice.settings.database_url + "_mig"
    yield url
    admin, name = _admin_url(url)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    (tmp_path / "t_0001_a.sql").write_text(
        "CREATE SCHEMA t; CREATE TABLE t.a (id int PRIMARY KEY);"
    )
    # Slow enough that concurrent runners really overlap.
    (tmp_path / "t_0002_b.sql").write_text("SELECT pg_sleep(0.5); INSERT INTO t.a VALUES (1);")
    return tmp_path


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM t.a"))
    finally:
        await conn.close()


def test_applies_once_and_is_safe_to_run_twice(scratch_db: str, migrations_dir: Path) -> None:
    assert asyncio.run(ensure_database(scratch_db)) is True
    assert asyncio.run(ensure_database(scratch_db)) is False
    assert apply_migrations(scratch_db, [migrations_dir]) == ["t_0001_a", "t_0002_b"]
    assert apply_migrations(scratch_db, [migrations_dir]) == []
    assert asyncio.run(_count(scratch_db)) == 1


def test_concurrent_runners_do_not_race(scratch_db: str, migrations_dir: Path) -> None:
    asyncio.run(ensure_database(scratch_db))
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            results.append(apply_migrations(scratch_db, [migrations_dir]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == [[], [], [], ["t_0001_a", "t_0002_b"]]
    assert asyncio.run(_count(scratch_db)) == 1  # the INSERT ran exactly once


def test_a_crashed_runners_lock_row_does_not_wedge_the_next(
    scratch_db: str, migrations_dir: Path
) -> None:
    asyncio.run(ensure_database(scratch_db))
    from yoyo import get_backend

    backend = get_backend(_yoyo_url(scratch_db))
    # What a runner killed mid-migration leaves behind.
    with backend.transaction():
        backend.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")
    backend.connection.close()
    assert apply_migrations(scratch_db, [migrations_dir]) == ["t_0001_a", "t_0002_b"]


def test_cli_migrate_creates_the_database_and_applies_every_service(
    scratch_db: str, bf_slice: Slice
) -> None:
    env = {**bf_slice.env, "BILLFOLD_DATABASE_URL": scratch_db, "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", "from billfold.cli import main; main()", "migrate"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "applied " in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "(0 applied" in second.stdout

    async def schemas() -> set[str]:
        conn = await asyncpg.connect(scratch_db)
        try:
            rows = await conn.fetch("SELECT nspname FROM pg_namespace")
            return {r["nspname"] for r in rows}
        finally:
            await conn.close()

    assert "portal" in asyncio.run(schemas())


def test_settings_database_url_untouched(bf_settings: Settings) -> None:
    # The slice's database is its own, never the developer's default one.
    assert bf_settings.database_url.rsplit("/", 1)[1].startswith("billfold_test_")
