"""send_email: the link travels to the notifier sealed, and only sealed; without the
notifier's public key the request is refused instead of the email being lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika.abc
import asyncpg
import pytest_asyncio
from aiohttp.test_utils import TestClient

from billfold import sealing
from billfold.events import PortalSessionCreated, parse_event
from billfold.settings import Settings
from billfold_testing.infra import Slice
from session_api.app import create_app

from .conftest import Tenant, assert_error, create_session, watch_events


@pytest_asyncio.fixture
async def queue(bf_settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    async with watch_events(
        bf_settings, bus_name="session-api-email-tests", queue_prefix="test.send_email"
    ) as q:
        yield q


async def _created_event(q: aio_pika.abc.AbstractQueue, session_id: str) -> tuple[Any, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        message = await q.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        event = parse_event(message.body)
        if isinstance(event, PortalSessionCreated) and event.data.session_id == session_id:
            return event, message.body.decode()
    raise AssertionError("no portal_session.created event")


async def test_created_event_carries_the_link_sealed_to_the_notifier(
    client: TestClient[Any, Any],
    tenant: Tenant,
    queue: aio_pika.abc.AbstractQueue,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
) -> None:
    created = await create_session(client, tenant, send_email=True)
    event, body = await _created_event(queue, created["id"])
    assert event.data.send_email is True
    assert event.data.sealed_link
    # Only the notifier's private key opens it, and it is the URL the caller got.
    assert (
        sealing.open_sealed(bf_slice.notifier_private_key, event.data.sealed_link)
        == (created["url"])
    )
    other = sealing.generate_keypair()
    try:
        sealing.open_sealed(other.private, event.data.sealed_link)
    except sealing.SealingError:
        pass
    else:
        raise AssertionError("opened with a foreign key")
    assert created["token"] not in body
    # The session row stores the hash only.
    stored = await db_pool.fetchval(
        "SELECT row_to_json(s)::text FROM portal.portal_sessions s WHERE id = $1", created["id"]
    )
    assert created["token"] not in stored


async def test_without_send_email_nothing_is_sealed(
    client: TestClient[Any, Any], tenant: Tenant, queue: aio_pika.abc.AbstractQueue
) -> None:
    created = await create_session(client, tenant)
    event, _ = await _created_event(queue, created["id"])
    assert event.data.sealed_link is None


async def test_outbox_row_holds_only_ciphertext(
    bf_settings: Settings, tenant: Tenant, db_pool: asyncpg.Pool, aiohttp_client: Callable[..., Any]
) -> None:
    # An app whose relay is not running: the event stays in the outbox to be read.
    app = create_app(bf_settings)
    relays = [ctx for ctx in app.cleanup_ctx if "relay_context" in repr(ctx)]
    assert len(relays) == 1
    app.cleanup_ctx.remove(relays[0])
    api: TestClient[Any, Any] = await aiohttp_client(app)
    created = await create_session(api, tenant, send_email=True)
    payload = await db_pool.fetchval(
        "SELECT payload::text FROM portal.outbox WHERE ordering_key = $1", created["id"]
    )
    assert payload is not None
    assert created["token"] not in payload
    assert "sealed_link" in payload
    # Published later by any relay; remove it so no other test's watcher sees it.
    await db_pool.execute("DELETE FROM portal.outbox WHERE ordering_key = $1", created["id"])


async def test_send_email_without_notifier_key_is_a_400(
    bf_settings: Settings, tenant: Tenant, db_pool: asyncpg.Pool, aiohttp_client: Callable[..., Any]
) -> None:
    settings = bf_settings.model_copy(update={"notifier_public_key": None})
    api: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    before = await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
    )
    resp = await api.post(
        "/v1/portal_sessions",
        json={"customer": tenant.customers[0].id, "send_email": True},
        headers=tenant.auth,
    )
    assert_error(resp.status, await resp.json(), 400, "email_unavailable", "send_email")
    after = await db_pool.fetchval(
        "SELECT count(*) FROM portal.portal_sessions WHERE site_id = $1", tenant.site_id
    )
    assert after == before
    # Without send_email the same server still creates sessions.
    resp = await api.post(
        "/v1/portal_sessions", json={"customer": tenant.customers[0].id}, headers=tenant.auth
    )
    assert resp.status == 201
