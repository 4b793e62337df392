"""Events reach RabbitMQ through the outbox: exactly once, with the right content."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aio_pika.abc
import asyncpg
import pytest_asyncio
from aiohttp.test_utils import TestClient

from billfold.events import PortalSessionCreated, PortalSessionRevoked, parse_event
from billfold.settings import Settings

from .conftest import Tenant, create_session, watch_events


@pytest_asyncio.fixture
async def queue(bf_settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with watch_events(
        bf_settings, bus_name="session-api-tests", queue_prefix="test.portal_sessions"
    ) as q:
        yield q


async def _drain(
    q: aio_pika.abc.AbstractQueue, want: int, settle: float = 0.5, timeout: float = 10.0
) -> list[Any]:
    """Messages on ``q``: until ``want`` arrived, then ``settle`` s more for duplicates."""
    got: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet_until: float | None = None
    while True:
        message = await q.get(no_ack=True, fail=False)
        if message is not None:
            got.append(message)
            continue
        now = loop.time()
        if len(got) >= want:
            quiet_until = quiet_until or now + settle
            if now >= quiet_until:
                return got
        elif now >= deadline:
            return got
        await asyncio.sleep(0.05)


async def test_created_and_revoked_events_once_each(
    client: TestClient[Any, Any],
    tenant: Tenant,
    queue: aio_pika.abc.AbstractQueue,
    db_pool: asyncpg.Pool,
) -> None:
    created = await create_session(
        client, tenant, send_email=True, locale="de", return_url="https://a.example/x"
    )
    resp = await client.delete(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
    assert resp.status == 204
    messages = await _drain(queue, want=2)
    events = [parse_event(m.body) for m in messages]
    mine = [e for e in events if getattr(e.data, "session_id", None) == created["id"]]
    assert [e.type for e in mine] == ["portal_session.created", "portal_session.revoked"]
    first, second = mine
    assert isinstance(first, PortalSessionCreated)
    assert isinstance(second, PortalSessionRevoked)
    assert first.site_id == second.site_id == tenant.site_id
    assert first.data.customer_id == tenant.customers[0].id
    assert first.data.send_email is True
    assert first.data.locale == "de"
    assert first.data.return_url == "https://a.example/x"
    assert second.data.at is not None
    # Routing key = type, message id = event id, request id carried in the headers.
    assert messages[0].routing_key == "portal_session.created"
    assert messages[0].message_id == first.id
    assert messages[0].headers.get("x-request-id") == first.request_id
    assert first.request_id
    assert first.request_id.startswith("req_")
    # No token anywhere in the event.
    assert created["token"] not in messages[0].body.decode()
    # The relay removed what it published.
    left = await db_pool.fetchval(
        "SELECT count(*) FROM portal.outbox WHERE ordering_key = $1", created["id"]
    )
    assert left == 0


async def test_many_creates_each_published_exactly_once(
    client: TestClient[Any, Any], tenant: Tenant, queue: aio_pika.abc.AbstractQueue
) -> None:
    ids = set()
    for _ in range(10):
        ids.add((await create_session(client, tenant))["id"])
    messages = await _drain(queue, want=10)
    seen = [json.loads(m.body)["data"]["session_id"] for m in messages]
    assert sorted(s for s in seen if s in ids) == sorted(ids)
