"""``portal_session.expired``: exactly once per session whose expiry passed unrevoked.

Sessions are made through the API with a 60 s TTL, then their ``expires_at`` is moved
into the past directly. The apps here have no RabbitMQ (``without_broker``), so every
event they write stays in the outbox and is counted there; the last test runs the
app's own sweeper loop against the real broker.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika.abc
import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from billfold.db import _admin_url, apply_migrations, create_pool, ensure_database
from billfold.events import PortalSessionExpired, parse_event
from billfold.settings import Settings
from billfold_testing.infra import Slice
from session_api import MIGRATIONS
from session_api.app import create_app
from session_api.portal_sessions import expiry

from .conftest import Tenant, create_session, make_tenant, watch_events, without_broker

TTL = 60


@pytest_asyncio.fixture
async def quiet_client(
    aiohttp_client: Callable[..., Any], bf_settings: Settings
) -> TestClient[Any, Any]:
    """The app without a broker, and with its own sweeper idle for the test's length:
    the sweeps in these tests are the test's own calls."""
    settings = without_broker(bf_settings).model_copy(update={"expiry_sweep_interval": 3600.0})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def _expire(pool: asyncpg.Pool, session_ids: list[str], ago: str = "1 minute") -> None:
    await pool.execute(
        f"UPDATE portal.portal_sessions SET created_at = now() - interval '{ago}' - "  # noqa: S608
        f"interval '{TTL} seconds', expires_at = now() - interval '{ago}' "
        "WHERE id = ANY($1::text[])",
        session_ids,
    )


async def _expired_events(pool: asyncpg.Pool, session_ids: list[str]) -> Counter[str]:
    rows = await pool.fetch(
        "SELECT ordering_key FROM portal.outbox "
        "WHERE routing_key = 'portal_session.expired' AND ordering_key = ANY($1::text[])",
        session_ids,
    )
    return Counter(r["ordering_key"] for r in rows)


async def _sessions(client: TestClient[Any, Any], tenant: Tenant, n: int) -> list[str]:
    return [(await create_session(client, tenant, ttl_seconds=TTL))["id"] for _ in range(n)]


async def test_each_expired_session_once_revoked_never_used_too(
    quiet_client: TestClient[Any, Any], db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    expired, used, revoked, revoked_late, live = await _sessions(quiet_client, tenant, 5)
    await db_pool.execute("UPDATE portal.portal_sessions SET used_at = now() WHERE id = $1", used)
    resp = await quiet_client.delete(f"/v1/portal_sessions/{revoked}", headers=tenant.auth)
    assert resp.status == 204
    await _expire(db_pool, [expired, used, revoked, revoked_late])
    # Revoked after it had expired: it did expire first, so it is announced.
    resp = await quiet_client.delete(f"/v1/portal_sessions/{revoked_late}", headers=tenant.auth)
    assert resp.status == 204
    # A revoke before expiry leaves revoked_at < expires_at: _expire moved expiry back,
    # so put the first revoke back before it, as it happened.
    await db_pool.execute(
        "UPDATE portal.portal_sessions SET revoked_at = expires_at - interval '10 seconds' "
        "WHERE id = $1",
        revoked,
    )
    mine = [expired, used, revoked, revoked_late, live]

    await expiry.sweep(db_pool)
    assert await _expired_events(db_pool, mine) == {expired: 1, used: 1, revoked_late: 1}
    await expiry.sweep(db_pool)  # nothing new: each is marked announced
    assert await _expired_events(db_pool, mine) == {expired: 1, used: 1, revoked_late: 1}
    marked = await db_pool.fetch(
        "SELECT id FROM portal.portal_sessions WHERE id = ANY($1::text[]) "
        "AND expired_event_at IS NOT NULL",
        mine,
    )
    assert {r["id"] for r in marked} == {expired, used, revoked_late}

    row = await db_pool.fetchrow(
        "SELECT payload::text AS payload FROM portal.outbox "
        "WHERE routing_key = 'portal_session.expired' AND ordering_key = $1",
        used,
    )
    assert row is not None
    event = parse_event(row["payload"])
    assert isinstance(event, PortalSessionExpired)
    assert event.site_id == tenant.site_id
    assert event.data.session_id == used
    assert event.data.customer_id == tenant.customers[0].id
    assert event.data.at == event.data.expires_at


async def test_two_sweepers_at_once_announce_each_session_once(
    quiet_client: TestClient[Any, Any], db_pool: asyncpg.Pool, bf_settings: Settings
) -> None:
    """Two replicas sweeping at the same time, each on its own pool, in small batches
    so their claims interleave."""
    tenant = await make_tenant(db_pool)
    ids = await _sessions(quiet_client, tenant, 30)
    await _expire(db_pool, ids)
    pools = [await create_pool(bf_settings, min_size=1, max_size=1) for _ in range(2)]
    try:
        counts = await asyncio.gather(*(expiry.sweep(p, batch=3) for p in pools))
    finally:
        for p in pools:
            await p.close()
    assert await _expired_events(db_pool, ids) == dict.fromkeys(ids, 1)
    assert sum(counts) >= len(ids)  # other tests' expired sessions may be swept too


async def test_a_sweeper_skips_what_another_holds_instead_of_waiting_or_repeating(
    quiet_client: TestClient[Any, Any], db_pool: asyncpg.Pool, bf_settings: Settings
) -> None:
    """One replica has claimed sessions and not committed yet; another sweeps: it
    neither waits for those rows nor announces them, and after both commit every
    session has exactly one event."""
    tenant = await make_tenant(db_pool)
    ids = await _sessions(quiet_client, tenant, 6)
    # Expired long ago, so they come first in the claim order (by expiry).
    await _expire(db_pool, ids, ago="30 days")
    other = await create_pool(bf_settings, min_size=1, max_size=1)
    try:
        async with db_pool.acquire() as conn, conn.transaction():
            held = await expiry.announce(conn, limit=2)
            assert set(held) <= set(ids)
            assert len(held) == 2
            await asyncio.wait_for(expiry.sweep(other), timeout=10)
            # The other sweeper announced the rest, not what this one holds.
            assert await _expired_events(db_pool, ids) == {i: 1 for i in ids if i not in held}
    finally:
        await other.close()
    assert await _expired_events(db_pool, ids) == dict.fromkeys(ids, 1)


@pytest_asyncio.fixture
async def queue(bf_settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with watch_events(
        bf_settings, bus_name="session-api-expiry-tests", queue_prefix="test.expiry"
    ) as q:
        yield q


async def test_the_apps_sweeper_publishes_the_event(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    db_pool: asyncpg.Pool,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    settings = bf_settings.model_copy(update={"expiry_sweep_interval": 0.2})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(db_pool)
    created = await create_session(client, tenant, ttl_seconds=TTL, locale="fr")
    await _expire(db_pool, [created["id"]])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    found: list[PortalSessionExpired] = []
    while not found:
        assert loop.time() < deadline, "no portal_session.expired published"
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        event = parse_event(message.body)
        if isinstance(event, PortalSessionExpired) and event.data.session_id == created["id"]:
            assert message.routing_key == "portal_session.expired"
            assert message.message_id == event.id
            found.append(event)
    event = found[0]
    assert event.site_id == tenant.site_id
    assert event.data.customer_id == created["customer"]
    assert event.data.locale == "fr"
    assert event.data.single_use is True


@pytest.fixture
def scratch_db(bf_slice: Slice) -> Iterator[str]:
    """A database of its own (created by the migration run), dropped afterwards."""
    url = bf_slice.settings.database_url + "_exp"
    yield url
    admin, name = _admin_url(url)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


async def test_migration_marks_sessions_expired_before_it_without_announcing_them(
    scratch_db: str, tmp_path: Path
) -> None:
    """Deploying the sweeper must not announce every session that expired in the past
    (tenant webhooks would get a burst of stale expiries): portal_0002 marks them."""
    before = tmp_path / "before"
    before.mkdir()
    for sql in MIGRATIONS.glob("*_0001_*.sql"):
        shutil.copy(sql, before)
    await ensure_database(scratch_db)
    assert await asyncio.to_thread(apply_migrations, scratch_db, [before])
    conn = await asyncpg.connect(scratch_db)
    try:
        await conn.execute("INSERT INTO portal.sites (id, slug, name) VALUES ('site_m', 'm', 'M')")
        for session_id, expires in (
            ("ps_old", "- interval '1 day'"),
            ("ps_live", "+ interval '1 hour'"),
        ):
            await conn.execute(
                "INSERT INTO portal.portal_sessions (id, site_id, customer_id, token_hash, "  # noqa: S608
                f"sections, created_at, expires_at) VALUES ($1, 'site_m', 'cu_m', $1, '{{}}', "
                f"now() - interval '2 days', now() {expires})",
                session_id,
            )
        applied = await asyncio.to_thread(apply_migrations, scratch_db, [MIGRATIONS])
        assert applied[:1] == ["portal_0002_expired_events"]  # later migrations may follow
        rows = await conn.fetch(
            "SELECT id, expired_event_at IS NOT NULL AS marked FROM portal.portal_sessions"
        )
        assert {r["id"]: r["marked"] for r in rows} == {"ps_old": True, "ps_live": False}
        assert await conn.fetchval("SELECT count(*) FROM portal.outbox") == 0
    finally:
        await conn.close()
