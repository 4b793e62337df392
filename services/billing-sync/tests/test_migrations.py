"""The mirror's migrations: taken over from session-api without re-applying, ordered
across folders, and the outbox defined once (``billfold.outbox.outbox_ddl``)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import billing_sync
import session_api
from billfold.db import _admin_url, apply_migrations, ensure_database, migration_dirs
from billfold.outbox import outbox_ddl
from billfold_testing.infra import Slice


@pytest.fixture
def scratch_db(bf_slice: Slice) -> Iterator[str]:
    url = bf_slice.settings.database_url + "_mirror"
    asyncio.run(ensure_database(url))
    yield url
    admin, name = _admin_url(url)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


def test_mirror_folder_comes_first_and_holds_the_customers_migration() -> None:
    dirs = migration_dirs()
    assert dirs.index(Path(billing_sync.MIGRATIONS)) < dirs.index(Path(session_api.MIGRATIONS))
    assert (Path(billing_sync.MIGRATIONS) / "mirror_0001_customers.sql").exists()
    assert not (Path(session_api.MIGRATIONS) / "mirror_0001_customers.sql").exists()


def test_a_database_migrated_before_the_move_does_not_reapply_it(
    scratch_db: str, tmp_path: Path
) -> None:
    # Yesterday's layout: session-api's folder held mirror_0001_customers.sql.
    old = tmp_path / "session_api_migrations"
    old.mkdir()
    for name in ("mirror_0001_customers.sql", "portal_0001_init.sql"):
        source = Path(billing_sync.MIGRATIONS) / name
        if not source.exists():
            source = Path(session_api.MIGRATIONS) / name
        shutil.copy(source, old / name)
    assert apply_migrations(scratch_db, [old]) == ["mirror_0001_customers", "portal_0001_init"]

    async def seed() -> None:
        conn = await asyncpg.connect(scratch_db)
        await conn.execute(
            "INSERT INTO mirror.customers (id, site_id, external_id) VALUES ('cu_old', 's', 'e')"
        )
        await conn.close()

    asyncio.run(seed())
    # Today's layout: only the migrations added since are pending, the row survives.
    assert apply_migrations(scratch_db) == [
        "mirror_0002_billing",
        "mirror_0003_rpc_calls",
        "portal_0002_expired_events",
    ]

    async def check() -> list[str]:
        conn = await asyncpg.connect(scratch_db)
        try:
            return [r["id"] for r in await conn.fetch("SELECT id FROM mirror.customers")]
        finally:
            await conn.close()

    assert asyncio.run(check()) == ["cu_old"]


async def _shape(conn: asyncpg.Connection, schema: str) -> dict[str, object]:
    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = $1 "
        "AND table_name IN ('outbox', 'processed_events') ORDER BY table_name, column_name",
        schema,
    )
    indexes = await conn.fetch(
        "SELECT tablename, indexname, replace(indexdef, $1 || '.', 'S.') AS def "
        "FROM pg_indexes WHERE schemaname = $1 AND tablename IN ('outbox', 'processed_events') "
        "ORDER BY indexname",
        schema,
    )
    constraints = await conn.fetch(
        "SELECT tc.table_name, tc.constraint_type, kcu.column_name "
        "FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage "
        "kcu USING (constraint_schema, constraint_name) WHERE tc.table_schema = $1 "
        "AND tc.table_name IN ('outbox', 'processed_events') ORDER BY 1, 2, 3",
        schema,
    )

    def default(value: str | None) -> str | None:
        # A serial's default names its schema's sequence.
        return value.replace(f"{schema}.", "S.") if value else value

    return {
        "columns": [(*tuple(r)[:4], default(r["column_default"])) for r in columns],
        "indexes": [tuple(r) for r in indexes],
        "constraints": [tuple(r) for r in constraints],
    }


async def test_every_outbox_has_the_shape_outbox_ddl_creates(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute("DROP SCHEMA IF EXISTS ddl_reference CASCADE")
        await conn.execute("CREATE SCHEMA ddl_reference")
        try:
            await conn.execute(outbox_ddl("ddl_reference"))
            reference = await _shape(conn, "ddl_reference")
            # session-api's predates outbox_ddl (pasted in portal_0001_init.sql); mirror's
            # is made by it. Both must stay what the relay expects.
            assert await _shape(conn, "portal") == reference
            assert await _shape(conn, "mirror") == reference
            assert len(reference["columns"]) == 13  # type: ignore[arg-type]
        finally:
            await conn.execute("DROP SCHEMA ddl_reference CASCADE")
