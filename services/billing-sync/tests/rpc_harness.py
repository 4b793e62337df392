"""The RPC path for real: an ``RpcClient`` on its own bus → RabbitMQ (the run's slice)
→ billing-sync's app serving its own call queue → the fake Stripe over HTTP, through a
``TcpProxy`` the tests can pause (Stripe hangs) or cut (Stripe down).

Each test's site has its own API key (its own Stripe account, as in ``synced``). The
worker is off unless a test asks for it (indirect parametrisation ``{"worker": True}``),
so a mirror row changed after a call was changed by the call itself, before its reply.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import stripe
from aiohttp.test_utils import TestServer

from billfold.bus import Bus
from billfold.rpc import RPC_SERVER, RpcClient
from billfold.settings import Settings
from billfold_testing.stripe_fake import seeding
from billfold_testing.stripe_fake.fixtures import StripeFake
from billfold_testing.tcp_proxy import TcpProxy
from billing_sync import accounts
from billing_sync.app import create_app
from billing_sync.reconcile import _customer as reconcile_customer
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.state import STRIPE

from .conftest import Eventually, new_site


@dataclass
class Customer:
    id: str  # cu_… (the mirror's)
    stripe_id: str
    site_id: str
    card: str | None  # the default pm_…
    subscription: str | None
    price: str


@dataclass
class RpcEnv:
    site_id: str
    client: RpcClient
    bus: Bus  # the caller's (portal-web's) connection
    api: stripe.StripeClient  # the tests' own client on the fake (not through the proxy)
    fake: StripeFake
    proxy: TcpProxy
    pool: asyncpg.Pool
    server: TestServer
    box: SecretBox

    #: the customers made by :meth:`customer`: Stripe id -> site
    made: dict[str, str] = field(default_factory=dict)

    async def mirror(self) -> None:
        """Bring each customer made here (with its cards, subscriptions, invoices) in
        line with the fake, as reconciliation does, in its own site. (One fake serves
        every site's key, so a whole-account backfill would mirror every site's
        customers into each.)"""
        gateway = self.server.app[STRIPE]
        for stripe_id, site in self.made.items():
            async with self.pool.acquire() as conn:
                account = await accounts.get(conn, self.box, site)
            assert account is not None
            await reconcile_customer(
                self.pool, account, gateway.client(account), stripe_id, Counter()
            )

    async def new_site(self) -> str:
        """Another site, with a Stripe account of its own."""
        site = await new_site(self.pool)
        async with self.pool.acquire() as conn:
            await accounts.configure(
                conn, self.box, site, api_key=f"sk_test_{secrets.token_hex(12)}"
            )
        return site

    async def customer(
        self,
        *,
        site_id: str | None = None,
        card: str | None = "pm_card_visa",
        subscription: dict[str, Any] | None = None,
    ) -> Customer:
        """A Stripe customer with a default card and a monthly subscription
        (``subscription`` adds parameters; ``{}`` for defaults, None for none), mirrored."""
        site = site_id or self.site_id
        api = self.api
        cus, cards = await seeding.customer_with_cards(
            api,
            cards=(card,) if card is not None else (),
            email=f"{secrets.token_hex(4)}@example.com",
        )
        pm_id = cards[0] if cards else None
        price = await seeding.monthly_price(api)
        sub_id = None
        if subscription is not None:
            sub = await api.v1.subscriptions.create_async(
                params={"customer": cus.id, "items": [{"price": price}], **subscription}
            )
            sub_id = sub.id
        self.made[cus.id] = site
        await self.mirror()
        cid = await self.pool.fetchval(
            "SELECT id FROM mirror.customers WHERE stripe_id = $1 AND site_id = $2", cus.id, site
        )
        assert cid is not None, "customer not mirrored"
        return Customer(cid, cus.id, site, pm_id, sub_id, price)

    async def settled(self, eventually: Eventually) -> None:
        """Every webhook delivered and processed (with the worker on)."""
        await asyncio.to_thread(self.fake.drain, 30)

        async def processed() -> bool:
            left = await self.pool.fetchval(
                "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1 "
                "AND processed_at IS NULL",
                self.site_id,
            )
            return int(left) == 0

        await eventually(processed)

    def writes(self, idempotency_key: str) -> int:
        """Stripe events caused by requests with this idempotency key: one per write that
        changed something (a replayed key changes nothing)."""

        def count() -> int:
            return sum(
                1
                for e in self.fake.state.table("event").values()
                if (e.get("request") or {}).get("idempotency_key") == idempotency_key
            )

        return self.fake.call(count)


@pytest_asyncio.fixture(name="rpc_env")
async def rpc_env_fixture(
    request: pytest.FixtureRequest,
    bf_settings: Settings,
    settings: BillingSyncSettings,
    db_pool: asyncpg.Pool,
    stripe_fake: StripeFake,
    stripe_api: stripe.StripeClient,
    box: SecretBox,
    eventually: Eventually,
) -> AsyncIterator[RpcEnv]:
    options: dict[str, Any] = getattr(request, "param", {})
    proxy = TcpProxy("127.0.0.1", int(stripe_fake.base_url.rsplit(":", 1)[1]))
    await proxy.start()
    queue = f"billfold.rpc.billing.test-{secrets.token_hex(6)}"
    app = create_app(
        settings.model_copy(
            update={
                "stripe_api_base": f"http://127.0.0.1:{proxy.port}",
                # A Stripe outage must reach the handler at once, not after retries.
                "stripe_max_network_retries": 0,
            }
        ),
        worker=options.get("worker", False),
        reconcile=False,
        rpc_queue=queue,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    bus = await Bus.connect(bf_settings, name="portal-web-test")
    client = RpcClient(bus, queue=queue, timeout=10)
    try:
        await eventually(lambda: app[RPC_SERVER].serving)
        site = await new_site(db_pool)
        endpoint = await stripe_api.v1.webhook_endpoints.create_async(
            params={
                "url": str(server.make_url(f"/stripe/webhooks/{site}")),
                "enabled_events": ["*"],
            }
        )
        async with db_pool.acquire() as conn:
            await accounts.configure(
                conn,
                box,
                site,
                api_key=f"sk_test_{secrets.token_hex(12)}",
                webhook_secret=str(endpoint.secret),
            )
        yield RpcEnv(site, client, bus, stripe_api, stripe_fake, proxy, db_pool, server, box)
    finally:
        await client.close()
        await bus.close()
        proxy.resume()
        await server.close()
        await proxy.stop()
