"""Faults around processing: Stripe down while events wait, RabbitMQ down while
webhooks arrive. Nothing accepted is lost; the mirror and its change events complete
once the other side is back."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import stripe
from aiohttp.test_utils import TestServer

from billfold_testing.stripe_fake.fixtures import StripeFake
from billfold_testing.tcp_proxy import TcpProxy
from billing_sync import accounts
from billing_sync.app import create_app
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway
from billing_sync.worker import Worker

from .conftest import Eventually, Synced, new_site

MANUAL = [{"worker": False}]


def _via(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_stripe_down_while_processing_loses_nothing(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    customer = await synced.api.v1.customers.create_async(params={"email": "down@example.com"})
    await asyncio.to_thread(synced.fake.drain)
    proxy = TcpProxy("127.0.0.1", int(synced.fake.base_url.rsplit(":", 1)[1]))
    await proxy.start()
    gateway = StripeGateway(
        settings.model_copy(
            update={
                "stripe_api_base": f"http://127.0.0.1:{proxy.port}",
                "stripe_max_network_retries": 0,
            }
        )
    )
    worker = Worker(settings, synced.pool, gateway, box)
    query = (
        "SELECT count(*) FILTER (WHERE processed_at IS NULL) AS pending, "
        "max(attempts) AS attempts FROM mirror.stripe_events WHERE site_id = $1"
    )
    try:
        await synced.pool.execute(
            "UPDATE mirror.stripe_events SET next_attempt_at = 'infinity' "
            "WHERE site_id <> $1 AND processed_at IS NULL",
            synced.site_id,
        )
        await proxy.cut()  # Stripe unreachable
        assert await worker.run_once() == 1
        row = await synced.pool.fetchrow(query, synced.site_id)
        assert (row["pending"], row["attempts"]) == (1, 1)  # kept, backed off
        await proxy.restore()
        await synced.pool.execute(
            "UPDATE mirror.stripe_events SET next_attempt_at = now() WHERE site_id = $1",
            synced.site_id,
        )
        assert await worker.run_once() == 1
    finally:
        await proxy.stop()
        await gateway.close()
    assert (await synced.pool.fetchrow(query, synced.site_id))["pending"] == 0
    assert await synced.pool.fetchval(
        "SELECT email FROM mirror.customers WHERE stripe_id = $1", customer.id
    ) == ("down@example.com")


async def test_rabbitmq_down_while_webhooks_arrive_then_the_events_go_out(
    settings: BillingSyncSettings,
    db_pool: asyncpg.Pool,
    stripe_fake: StripeFake,
    stripe_api: stripe.StripeClient,
    box: SecretBox,
    eventually: Eventually,
) -> None:
    broker = urlsplit(settings.amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    await proxy.cut()  # RabbitMQ down before billing-sync even starts
    app = create_app(settings.model_copy(update={"amqp_url": _via(proxy, settings.amqp_url)}))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    site = await new_site(db_pool)
    try:
        endpoint = await stripe_api.v1.webhook_endpoints.create_async(
            params={
                "url": str(server.make_url(f"/stripe/webhooks/{site}")),
                "enabled_events": ["customer.created", "customer.updated"],
            }
        )
        async with db_pool.acquire() as conn:
            await accounts.configure(
                conn, box, site, webhook_secret=str(endpoint.secret), api_key="sk_test_" + site
            )
        created = await stripe_api.v1.customers.create_async(
            params={"email": "mq@example.com"}, options={"api_key": "sk_test_" + site}
        )
        await asyncio.to_thread(stripe_fake.drain)

        async def mirrored() -> bool:
            return bool(
                await db_pool.fetchval(
                    "SELECT count(*) FROM mirror.customers WHERE stripe_id = $1", created.id
                )
            )

        async def waiting_events() -> int:
            return int(
                await db_pool.fetchval(
                    "SELECT count(*) FROM mirror.outbox WHERE payload->>'site_id' = $1", site
                )
            )

        await eventually(mirrored, timeout=30)  # accepted and processed without RabbitMQ
        assert await waiting_events() == 1  # its change event waits in the outbox
        await proxy.restore()

        async def published() -> bool:
            return await waiting_events() == 0

        await eventually(published, timeout=60)
    finally:
        await server.close()
        await proxy.stop()
