"""Fixtures for billing-sync: the service over the run's slice, a fake Stripe, wiring.

``synced`` is the whole path for real: a site, a webhook endpoint registered at the fake
Stripe pointing at billing-sync's real HTTP endpoint, its signing secret stored
encrypted, and billing-sync running (webhooks in, worker, outbox relay).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import stripe
from aiohttp import web
from aiohttp.test_utils import TestServer

from billfold.settings import Settings
from billfold_testing.logcapture import LogCapture
from billfold_testing.stripe_fake.fixtures import StripeFake
from billfold_testing.waiting import Eventually
from billing_sync import accounts
from billing_sync.app import create_app
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings, new_secrets_key


@pytest.fixture(scope="session")
def secrets_key(bf_slice: Any) -> Iterator[str]:
    """A generated BILLFOLD_BILLING_SECRETS_KEY, exported for CLI subprocesses."""
    key = new_secrets_key()
    saved = os.environ.get("BILLFOLD_BILLING_SECRETS_KEY")
    os.environ["BILLFOLD_BILLING_SECRETS_KEY"] = key
    yield key
    if saved is None:
        os.environ.pop("BILLFOLD_BILLING_SECRETS_KEY", None)
    else:
        os.environ["BILLFOLD_BILLING_SECRETS_KEY"] = saved


@pytest.fixture(scope="session")
def bf_service_name() -> str:
    return "billing-sync"


@pytest.fixture
def settings(
    bf_settings: Settings, secrets_key: str, stripe_fake: StripeFake
) -> BillingSyncSettings:
    return BillingSyncSettings(
        **bf_settings.model_dump(),
        billing_secrets_key=secrets_key,
        stripe_api_key=stripe_fake.api_key,
        stripe_api_base=stripe_fake.base_url,
        coalesce_window=0.01,
    )


@pytest.fixture
def box(settings: BillingSyncSettings) -> SecretBox:
    return SecretBox(settings.secrets_key_bytes())


async def new_site(pool: asyncpg.Pool) -> str:
    """A site row as session-api makes it (tests only; billing-sync never writes it)."""
    site_id = f"site_{secrets.token_hex(12)}"
    await pool.execute(
        "INSERT INTO portal.sites (id, slug, name) VALUES ($1, $2, 'Test')",
        site_id,
        f"t-{secrets.token_hex(6)}",
    )
    return site_id


@pytest_asyncio.fixture
async def site(db_pool: asyncpg.Pool) -> str:
    return await new_site(db_pool)


@pytest_asyncio.fixture
async def stripe_api(stripe_fake: StripeFake) -> AsyncIterator[stripe.StripeClient]:
    """An async client on the fake, for the tests' own setup calls (never blocks the loop
    that serves billing-sync)."""
    http = stripe.AIOHTTPClient()
    yield stripe_fake.client(http_client=http)
    await http.close_async()  # type: ignore[no-untyped-call]


@dataclass
class Synced:
    """billing-sync serving one site whose Stripe webhooks reach it for real."""

    site_id: str
    server: TestServer
    app: web.Application
    fake: StripeFake
    api: stripe.StripeClient
    pool: asyncpg.Pool
    webhook_secret: str
    api_key: str

    @property
    def webhook_url(self) -> str:
        return str(self.server.make_url(f"/stripe/webhooks/{self.site_id}"))

    async def settled(self, eventually: Eventually, timeout: float = 60.0) -> None:
        """Every delivery the fake queued was accepted and every event processed."""
        await asyncio.to_thread(self.fake.drain, timeout)

        async def processed() -> bool:
            left = await self.pool.fetchval(
                "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1 "
                "AND processed_at IS NULL",
                self.site_id,
            )
            return int(left) == 0

        try:
            await eventually(processed, timeout=timeout)
        except AssertionError:
            stuck = await self.pool.fetch(
                "SELECT id, type, attempts, last_error FROM mirror.stripe_events "
                "WHERE site_id = $1 AND processed_at IS NULL LIMIT 5",
                self.site_id,
            )
            raise AssertionError(f"events not processed: {[dict(r) for r in stuck]}") from None

    async def outbox(self) -> list[dict[str, Any]]:
        """The mirror's change events for this site, in enqueue order: they stay in the
        outbox because this app's broker address answers nothing."""
        rows = await self.pool.fetch(
            "SELECT payload::text AS p FROM mirror.outbox WHERE payload->>'site_id' = $1 "
            "ORDER BY id",
            self.site_id,
        )
        return [json.loads(r["p"]) for r in rows]


@pytest_asyncio.fixture
async def synced(
    request: pytest.FixtureRequest,
    settings: BillingSyncSettings,
    db_pool: asyncpg.Pool,
    stripe_fake: StripeFake,
    stripe_api: stripe.StripeClient,
    box: SecretBox,
    log_capture: LogCapture,
) -> AsyncIterator[Synced]:
    site_id = await new_site(db_pool)
    # No relay to RabbitMQ in these tests: the outbox rows stay for the test to read
    # (the relay itself is billfold's, tested there). A broker URL nobody answers.
    # Options through indirect parametrisation, e.g. {"worker": False}: webhooks are
    # accepted but only the test processes them (Worker.run_once).
    options: dict[str, Any] = getattr(request, "param", {})
    app = create_app(
        settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"}),
        reconcile=False,
        worker=options.get("worker", True),
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url(f"/stripe/webhooks/{site_id}"))
        endpoint = await stripe_api.v1.webhook_endpoints.create_async(
            params={"url": url, "enabled_events": ["*"]}
        )
        secret = str(endpoint.secret)
        api_key = f"sk_test_{secrets.token_hex(12)}"
        async with db_pool.acquire() as conn:
            # A key of the site's own (the fake takes any sk_test_ key): each test's site
            # is then its own Stripe account, not one shared deployment account.
            await accounts.configure(
                conn,
                box,
                site_id,
                webhook_secret=secret,
                api_key=api_key,
            )
        yield Synced(site_id, server, app, stripe_fake, stripe_api, db_pool, secret, api_key)
    finally:
        await server.close()
