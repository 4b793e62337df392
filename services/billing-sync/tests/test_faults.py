"""Faults around processing: Stripe down while events wait, RabbitMQ down while
webhooks arrive, billing-sync's webhook endpoint unreachable while Stripe changes. Nothing
is lost; the mirror and its change events complete once the other side is back (for the
endpoint outage, through Stripe's redelivery)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import stripe
from aiohttp.test_utils import TestServer

from billfold_testing.stripe_fake.fixtures import StripeFake
from billfold_testing.stripe_fake.webhooks import RetryPolicy
from billfold_testing.tcp_proxy import TcpProxy
from billing_sync import accounts
from billing_sync.app import create_app
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway
from billing_sync.worker import Worker

from .compare import mismatches
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


async def test_endpoint_unreachable_then_stripes_redelivery_completes_the_mirror(
    synced: Synced, eventually: Eventually
) -> None:
    # billing-sync's webhook port behind a proxy that can be cut: Stripe's deliveries fail
    # at the TCP level while Stripe's objects change, as when billing-sync is down.
    proxy = TcpProxy("127.0.0.1", synced.server.port or 0)
    await proxy.start()
    endpoints = await synced.api.v1.webhook_endpoints.list_async()
    assert len(endpoints.data) == 1
    await synced.api.v1.webhook_endpoints.update_async(
        endpoints.data[0].id,
        params={"url": f"http://127.0.0.1:{proxy.port}/stripe/webhooks/{synced.site_id}"},
    )
    # Stripe's retry schedule (three days) compressed: ten tries, 50 ms doubling (about
    # 25 s in all), so the outage below spans several retries and the link is back well
    # before the last one. The default test policy gives up within ~0.15 s.
    synced.fake.call(
        lambda: setattr(
            synced.fake.dispatcher, "retry", RetryPolicy(attempts=10, backoff=0.05, timeout=5.0)
        )
    )
    api = synced.api
    try:
        await proxy.cut()
        customer = await api.v1.customers.create_async(
            params={"email": "away@example.com", "name": "Away"}
        )
        await api.v1.customers.update_async(customer.id, params={"name": "Away (renamed)"})
        card = await api.v1.payment_methods.attach_async(
            "pm_card_visa", params={"customer": customer.id}
        )
        await api.v1.customers.update_async(
            customer.id, params={"invoice_settings": {"default_payment_method": card.id}}
        )
        fake = synced.fake
        events = set(await asyncio.to_thread(fake.call, lambda: list(fake.state.table("event"))))
        assert len(events) >= 4

        async def each_failed_twice() -> bool:
            log = await asyncio.to_thread(synced.fake.deliveries)
            failed = [d["event"] for d in log if not d["ok"]]
            return all(failed.count(e) >= 2 for e in events)

        await eventually(each_failed_twice, timeout=20)  # down across retries, not one try
        log = await asyncio.to_thread(synced.fake.deliveries)
        assert not any(d["ok"] for d in log)
        assert (
            await synced.pool.fetchval(
                "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1", synced.site_id
            )
            == 0
        )  # billing-sync saw nothing
        await proxy.restore()
        await synced.settled(eventually, timeout=40)  # the fake's retries, then processing
    finally:
        await proxy.stop()

    log = await asyncio.to_thread(synced.fake.deliveries)
    delivered = [d for d in log if d["ok"]]
    # Every event was accepted once, and only by a redelivery after the failed tries.
    assert sorted(d["event"] for d in delivered) == sorted(events)
    assert all(d["attempt"] > 2 for d in delivered)
    assert await synced.pool.fetchval(
        "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1 AND processed_at IS NOT NULL",
        synced.site_id,
    ) == len(events)
    assert await mismatches(synced.pool, api, synced.site_id, set()) == []
    # Each change is emitted once: the customer (created with its final profile and
    # default card) and its card, however many events named them.
    kinds = sorted(e["type"] for e in await synced.outbox())
    assert kinds == ["customer.updated", "payment_method.updated"], kinds
