"""A link's use: session-api shows it within a second; portal_session.used goes out
through portal-web's own outbox."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika

from billfold.bus import Bus
from billfold.events import PortalSessionUsed, parse_event
from billfold.settings import Settings

from .conftest import Client, Tenant, create_link, link_path


async def test_use_is_visible_in_session_api_and_emitted(
    api: Client, portal: Client, tenant: Tenant, bf_settings: Settings
) -> None:
    bus = await Bus.connect(bf_settings, name="portal-web-test-watch")
    connection = await aio_pika.connect(bf_settings.amqp_url)
    channel = await connection.channel()
    name = f"test.portal-web.{uuid.uuid4().hex}"
    queue = await bus.declare_queue(name, ["portal_session.used"], channel=channel)
    try:
        created = await create_link(api, tenant)
        resp = await portal.post(
            link_path(created),
            headers={"User-Agent": "Mozilla/5.0 (Billfold test)"},
            allow_redirects=False,
        )
        assert resp.status == 303
        used_at = time.monotonic()
        resp = await api.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)
        body = await resp.json()
        assert time.monotonic() - used_at < 1.0
        assert body["status"] == "used"
        assert body["used_at"] is not None
        assert body["used_ip"] == "127.0.0.1"
        assert body["used_user_agent"] == "Mozilla/5.0 (Billfold test)"

        async def next_event() -> PortalSessionUsed:
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    event = parse_event(message.body)
                    if (
                        isinstance(event, PortalSessionUsed)
                        and event.data.session_id == created["id"]
                    ):
                        return event
            raise AssertionError("queue closed")

        event = await asyncio.wait_for(next_event(), 10)
        assert event.site_id == tenant.site_id
        assert event.data.customer_id == tenant.customer_ids[0]
        assert event.data.ip == "127.0.0.1"
        assert event.data.user_agent == "Mozilla/5.0 (Billfold test)"
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.queue_delete(f"{name}.dlq")
        await connection.close()
        await bus.close()
