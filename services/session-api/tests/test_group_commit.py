"""Group commit of session creates: concurrent creates share a statement, never an outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from billfold import tokens
from billfold.db import BoundedPool, PoolTimeout, create_pool
from billfold.events import PortalSessionCreated, parse_event
from billfold.settings import Settings
from session_api.keys import repository as keys
from session_api.keys.repository import KeyOwner
from session_api.portal_sessions import service
from session_api.portal_sessions.batcher import CreateBatcher
from session_api.portal_sessions.schemas import CreatePortalSession
from session_api.state import CREATE_BATCHER

from .conftest import LogCapture, Tenant, assert_error, create_session, make_tenant


async def _owner(pool: asyncpg.Pool, tenant: Tenant) -> KeyOwner:
    owner = await keys.owner_by_hash(pool, tokens.hash_token(tenant.key))
    assert owner is not None
    return owner


def _draft(owner: KeyOwner, **params: Any) -> service.Draft:
    return service.prepare(owner, CreatePortalSession(**params), request_id="req_test")


async def _stored(pool: asyncpg.Pool, session_ids: list[str]) -> tuple[set[str], dict[str, Any]]:
    """(session ids with a row, event payload by session id) among ``session_ids``."""
    rows = await pool.fetch(
        "SELECT id FROM portal.portal_sessions WHERE id = ANY($1::text[])", session_ids
    )
    events = await pool.fetch(
        "SELECT ordering_key, payload::text AS payload FROM portal.outbox "
        "WHERE ordering_key = ANY($1::text[])",
        session_ids,
    )
    return {r["id"] for r in rows}, {e["ordering_key"]: json.loads(e["payload"]) for e in events}


async def test_one_statement_per_batch_each_with_its_own_outcome(
    db_pool: asyncpg.Pool, bf_settings: Settings
) -> None:
    """A revoked key and an unknown customer in the middle of a batch refuse only their
    own rows; the others commit with their events, all in one statement."""
    live, revoked = await make_tenant(db_pool), await make_tenant(db_pool)
    live_owner, revoked_owner = await _owner(db_pool, live), await _owner(db_pool, revoked)
    async with db_pool.acquire() as conn:
        await keys.revoke(conn, revoked.key_id)
    c0, c1 = live.customers
    drafts = [
        _draft(live_owner, customer=c0.id),
        _draft(revoked_owner, customer=revoked.customers[0].id),  # key revoked since
        _draft(live_owner, customer_external_id=c1.external_id),
        _draft(live_owner, customer="cu_nosuchcustomer"),
        _draft(live_owner, customer=revoked.customers[0].id),  # another site's customer
        _draft(live_owner, customer=c1.stripe_id, ttl_seconds=600, locale="fr"),
    ]
    batcher = CreateBatcher(db_pool)
    outcomes = await asyncio.gather(*(batcher.create(d.new) for d in drafts))
    assert batcher.statements == 1
    assert outcomes == [
        (True, c0.id),
        (False, None),
        (True, c1.id),
        (True, None),
        (True, None),
        (True, c1.id),
    ]
    ids = [d.new.session_id for d in drafts]
    rows, events = await _stored(db_pool, ids)
    written = {ids[0], ids[2], ids[5]}
    assert rows == written
    assert set(events) == written
    for i, customer in ((0, c0.id), (2, c1.id), (5, c1.id)):
        event = events[ids[i]]
        parsed = parse_event(json.dumps(event).encode())
        assert isinstance(parsed, PortalSessionCreated)
        assert parsed.data.customer_id == customer
        assert event["id"] == drafts[i].new.event.id
        assert event["type"] == "portal_session.created"
        assert event["site_id"] == live.site_id
        assert event["request_id"] == "req_test"
        assert event["data"]["customer_id"] == customer
        assert event["data"]["session_id"] == ids[i]
    assert events[ids[5]]["data"]["locale"] == "fr"
    # And the answer each caller builds from its outcome is its own.
    assert service.finish(bf_settings, drafts[0], *outcomes[0]).body["id"] == ids[0]


async def test_a_failing_batch_is_retried_row_by_row(db_pool: asyncpg.Pool) -> None:
    """A statement that fails as a whole (here: two rows with one id) is retried one row
    at a time, so only the row that cannot be written fails."""
    tenant = await make_tenant(db_pool)
    owner = await _owner(db_pool, tenant)
    first = _draft(owner, customer=tenant.customers[0].id)
    clash = dataclasses.replace(
        _draft(owner, customer=tenant.customers[1].id).new, session_id=first.new.session_id
    )
    other = _draft(owner, customer=tenant.customers[1].id)
    batcher = CreateBatcher(db_pool)
    results = await asyncio.gather(
        batcher.create(first.new),
        batcher.create(clash),
        batcher.create(other.new),
        return_exceptions=True,
    )
    assert results[0] == (True, tenant.customers[0].id)
    assert isinstance(results[1], asyncpg.UniqueViolationError)
    assert results[2] == (True, tenant.customers[1].id)
    rows, events = await _stored(db_pool, [first.new.session_id, other.new.session_id])
    assert rows == set(events) == {first.new.session_id, other.new.session_id}


async def test_a_batch_without_a_free_connection_fails_together_at_once(
    db_pool: asyncpg.Pool, bf_settings: Settings
) -> None:
    """The pool stays saturated past its acquire timeout: every create of the batch gets
    PoolTimeout (a 503) after ONE wait, not one wait per member retried alone."""
    tenant = await make_tenant(db_pool)
    owner = await _owner(db_pool, tenant)
    pool = await create_pool(bf_settings, min_size=1, max_size=1)
    try:
        batcher = CreateBatcher(BoundedPool(pool, acquire_timeout=0.2))
        drafts = [_draft(owner, customer=tenant.customers[0].id) for _ in range(8)]
        held = await pool.acquire()
        try:
            start = time.perf_counter()
            results = await asyncio.gather(
                *(batcher.create(d.new) for d in drafts), return_exceptions=True
            )
            took = time.perf_counter() - start
        finally:
            await pool.release(held)
        assert all(isinstance(r, PoolTimeout) for r in results), results
        assert took < 0.2 * 3, took  # alone, one after the other: 8 waits (1.6 s)
        assert batcher.statements == 0
        rows, events = await _stored(db_pool, [d.new.session_id for d in drafts])
        assert rows == set() == set(events)
        # With the connection free again, the same batcher writes.
        assert await batcher.create(drafts[0].new) == (True, tenant.customers[0].id)
        await batcher.close()
    finally:
        await pool.close()


async def test_creates_queue_behind_statements_in_flight(db_pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(db_pool)
    owner = await _owner(db_pool, tenant)
    batcher = CreateBatcher(db_pool, max_batch=8, max_in_flight=1)
    drafts = [_draft(owner, customer=tenant.customers[i % 2].id) for i in range(40)]
    outcomes = await asyncio.gather(*(batcher.create(d.new) for d in drafts))
    assert outcomes == [(True, tenant.customers[i % 2].id) for i in range(40)]
    assert batcher.rows == 40
    assert 5 <= batcher.statements < 40
    rows, events = await _stored(db_pool, [d.new.session_id for d in drafts])
    assert len(rows) == len(events) == 40
    await batcher.close()


async def test_concurrent_http_creates_each_get_their_own_answer(
    client: TestClient[Any, Any], db_pool: asyncpg.Pool
) -> None:
    a, b = await make_tenant(db_pool), await make_tenant(db_pool)

    async def post(tenant: Tenant, **params: Any) -> tuple[int, dict[str, Any]]:
        resp = await client.post("/v1/portal_sessions", json=params, headers=tenant.auth)
        return resp.status, await resp.json()

    calls = []
    for i in range(30):
        tenant = (a, b)[i % 2]
        if i % 10 == 5:
            calls.append(post(tenant, customer="cu_missing"))
        elif i % 3 == 0:
            calls.append(post(tenant, customer_external_id=tenant.customers[1].external_id))
        else:
            calls.append(post(tenant, customer=tenant.customers[0].id))
    statements_before = client.app[CREATE_BATCHER].statements
    results = await asyncio.gather(*calls)
    assert client.app[CREATE_BATCHER].statements - statements_before < 30  # batched
    created: list[str] = []
    for i, (status, body) in enumerate(results):
        tenant = (a, b)[i % 2]
        if i % 10 == 5:
            assert_error(status, body, 400, "resource_missing", "customer")
            continue
        assert status == 201, body
        want = tenant.customers[1 if i % 3 == 0 else 0].id
        assert body["customer"] == want
        row = await db_pool.fetchrow(
            "SELECT site_id, customer_id, token_hash FROM portal.portal_sessions WHERE id = $1",
            body["id"],
        )
        assert row is not None
        assert (row["site_id"], row["customer_id"]) == (tenant.site_id, want)
        assert row["token_hash"] == tokens.hash_token(body["token"])
        created.append(body["id"])
    assert len(set(created)) == 27


async def test_revoked_key_refused_within_concurrent_creates(
    client: TestClient[Any, Any], db_pool: asyncpg.Pool
) -> None:
    live, gone = await make_tenant(db_pool), await make_tenant(db_pool)
    await create_session(client, gone)  # warms the owner cache for the key
    async with db_pool.acquire() as conn:
        await keys.revoke(conn, gone.key_id)

    async def post(tenant: Tenant) -> int:
        resp = await client.post(
            "/v1/portal_sessions", json={"customer": tenant.customers[0].id}, headers=tenant.auth
        )
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(post((live, gone)[i % 2]) for i in range(20)))
    assert statuses == [201, 401] * 10
    count = await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", gone.site_id
    )
    assert count == 1  # only the create from before the revocation


async def test_each_batched_create_logs_its_own_line(
    client: TestClient[Any, Any], tenant: Tenant, logs: LogCapture
) -> None:
    """The shared statement runs in its own task; every request's access line still
    carries that request's id, session and customer, and no token."""

    async def post(i: int) -> tuple[str, dict[str, Any]]:
        resp = await client.post(
            "/v1/portal_sessions",
            json={"customer": tenant.customers[i % 2].id},
            headers={**tenant.auth, "X-Request-Id": f"trace-{i}"},
        )
        assert resp.status == 201
        return resp.headers["X-Request-Id"], await resp.json()

    results = dict(await asyncio.gather(*(post(i) for i in range(12))))
    lines = {line["request_id"]: line for line in logs.lines() if line["event"] == "http_request"}
    assert set(lines) == set(results)
    for request_id, body in results.items():
        assert lines[request_id]["session_id"] == body["id"]
        assert lines[request_id]["customer"] == body["customer"]
        assert body["token"] not in logs.text()
