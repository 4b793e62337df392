"""billing-sync for portal-web's tests, for real: its app (webhooks in, worker, RPC
server on a queue of the test's own) in front of the fake Stripe, and customers made in
the fake and mirrored through billing-sync's webhook endpoint, never rows written into
the mirror by the test.

portal-web reaches it the way it does in production: RPC over the run's RabbitMQ
(``create_portal(settings, rpc_queue=billing.queue)``), and the mirror through Postgres.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import stripe
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from billfold.rpc import RPC_SERVER
from billfold.settings import Settings
from billfold_testing.stripe_fake import seeding
from billfold_testing.stripe_fake.fixtures import StripeFake
from billfold_testing.waiting import Eventually
from billing_sync import accounts
from billing_sync.accounts import SITE_METADATA_KEY
from billing_sync.mirror.customers import EXTERNAL_ID_KEY
from billing_sync.secrets import SecretBox

from .conftest import Tenant


@dataclass
class Billing:
    """billing-sync serving one tenant's site (see the module docstring)."""

    tenant: Tenant
    server: TestServer
    queue: str
    api: stripe.StripeClient  # the tests' own client on the fake (setup, checks)
    fake: StripeFake
    pool: asyncpg.Pool

    def idempotency_keys(self) -> set[str]:
        """Every Idempotency-Key the fake Stripe stored a write under: the writes made."""
        fake = self.fake
        return fake.call(lambda: {key for _, key in fake.state.idempotency})

    async def settled(self, eventually: Eventually) -> None:
        """Every webhook the fake queued delivered and processed into the mirror."""
        await asyncio.to_thread(self.fake.drain, 30)

        async def processed() -> bool:
            left = await self.pool.fetchval(
                "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1 "
                "AND processed_at IS NULL",
                self.tenant.site_id,
            )
            return int(left) == 0

        await eventually(processed, timeout=60)

    async def customer(
        self,
        eventually: Eventually,
        *,
        cards: tuple[str, ...] = ("pm_card_visa",),
        subscription: dict[str, Any] | None = None,
        open_invoice: bool = False,
        name: str = "Ada Lovelace",
    ) -> Customer:
        """A customer in the fake Stripe (the first card is the default; a monthly
        subscription unless ``subscription`` is None; ``open_invoice``: one more,
        invoiced subscription whose first invoice is open), mirrored through the
        webhooks. Its Billfold id becomes the tenant's customer."""
        api, ext = self.api, f"ext-{secrets.token_hex(4)}"
        cus, card_ids = await seeding.customer_with_cards(
            api,
            cards=cards,
            email=f"{ext}@example.com",
            name=name,
            metadata={EXTERNAL_ID_KEY: ext, SITE_METADATA_KEY: self.tenant.site_id},
        )
        price = await seeding.monthly_price(api, product="Pro plan", unit_amount=4900)
        sub_id = None
        if subscription is not None:
            sub = await api.v1.subscriptions.create_async(
                params={"customer": cus.id, "items": [{"price": price}], **subscription}
            )
            sub_id = str(sub.id)
        invoice_id = await seeding.open_invoice(api, cus.id, price) if open_invoice else None
        await self.settled(eventually)
        cid = await self.pool.fetchval(
            "SELECT id FROM mirror.customers WHERE site_id = $1 AND stripe_id = $2",
            self.tenant.site_id,
            cus.id,
        )
        assert cid is not None, "customer not mirrored"
        self.tenant.customer_ids = [str(cid)]
        return Customer(str(cid), str(cus.id), card_ids, sub_id, invoice_id)


@dataclass
class Customer:
    id: str  # cu_… (the mirror's)
    stripe_id: str
    cards: list[str]  # pm_…, the default first
    subscription: str | None
    invoice: str | None  # the open one


async def register(
    pool: asyncpg.Pool, box: SecretBox, api: stripe.StripeClient, server: TestServer, site: str
) -> None:
    """The site's Stripe account (a key of its own at the fake) with a webhook endpoint
    at billing-sync, its signing secret stored encrypted: as `billfold stripe
    webhook-register` leaves it."""
    endpoint = await api.v1.webhook_endpoints.create_async(
        params={"url": str(server.make_url(f"/stripe/webhooks/{site}")), "enabled_events": ["*"]}
    )
    async with pool.acquire() as conn:
        await accounts.configure(
            conn,
            box,
            site,
            api_key=f"sk_test_{secrets.token_hex(12)}",
            webhook_secret=str(endpoint.secret),
        )


#: The RPC deadline of a portal in front of the test's billing-sync: short, so a test of
#: "billing-sync stopped" hears back soon.
RPC_TIMEOUT = 2.0


async def portal_for(
    aiohttp_client: Callable[..., Any], bf_settings: Settings, billing: Billing
) -> TestClient[web.Request, web.Application]:
    """portal-web asking ``billing`` over RPC (its queue), with ``RPC_TIMEOUT``."""
    from portal_web.app import create_app as create_portal

    settings = bf_settings.model_copy(update={"rpc_timeout": RPC_TIMEOUT})
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_portal(settings, rpc_queue=billing.queue)
    )
    return client


def serving(server: TestServer) -> bool:
    return server.app[RPC_SERVER].serving
