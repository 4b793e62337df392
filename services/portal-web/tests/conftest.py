"""Fixtures for portal-web tests: portal-web and session-api over the run's slice.

Links are made the way production makes them: through session-api's POST (which also
writes the Redis link index portal-web's fast path reads). Mirror rows (subscriptions,
invoices) are inserted by the tests straight into the slice's ``mirror`` tables: in
production billing-sync writes them; here they are fixtures.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest_asyncio
import stripe
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, BrowserContext, async_playwright

from billfold.settings import Settings
from billfold_testing.browser import CHROMIUM, CHROMIUM_ARGS
from billfold_testing.infra import Slice
from billfold_testing.smtp_sink import SmtpSink
from billfold_testing.stripe_fake.fixtures import StripeFake
from billfold_testing.waiting import Eventually
from portal_web.app import create_app as create_portal
from session_api.app import create_app as create_session_api
from session_api.customers import repository as customers
from session_api.keys import repository as keys
from session_api.sites import repository as sites

if TYPE_CHECKING:
    from .billing import Billing

Client = TestClient[Any, Any]


@dataclass
class Tenant:
    site_id: str
    slug: str
    name: str
    key: str
    customer_ids: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_tenant(
    pool: asyncpg.Pool,
    *,
    name: str | None = None,
    primary_color: str | None = "#635bff",
    support_email: str | None = "help@example.com",
    frame_ancestors: list[str] | None = None,
    default_sections: dict[str, Any] | None = None,
    customer_name: str = "Ada Lovelace",
    with_customer: bool = True,
) -> Tenant:
    slug = f"t-{secrets.token_hex(5)}"
    async with pool.acquire() as conn:
        site = await sites.create(
            conn,
            slug=slug,
            name=name or f"Acme {slug}",
            primary_color=primary_color,
            support_email=support_email,
            frame_ancestors=frame_ancestors or [],
        )
        if default_sections is not None:
            await conn.execute(
                "UPDATE portal.sites SET default_sections = $2 WHERE id = $1",
                site.id,
                default_sections,
            )
        _, secret = await keys.create(conn, site.id, "secret", None)
        customer_ids = []
        if with_customer:
            customer = await customers.upsert(
                conn,
                site.id,
                external_id="ext-1",
                email="ada@example.com",
                name=customer_name,
                stripe_id=f"cus_{secrets.token_hex(6)}",
            )
            customer_ids.append(customer.id)
    return Tenant(site_id=site.id, slug=slug, name=site.name, key=secret, customer_ids=customer_ids)


@pytest_asyncio.fixture
async def tenant(db_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(db_pool)


@pytest_asyncio.fixture
async def api(aiohttp_client: Callable[..., Any], bf_settings: Settings) -> Client:
    """session-api, to create and revoke links as a tenant backend does."""
    client: Client = await aiohttp_client(create_session_api(bf_settings))
    return client


@pytest_asyncio.fixture
async def portal(aiohttp_client: Callable[..., Any], bf_settings: Settings) -> Client:
    client: Client = await aiohttp_client(create_portal(bf_settings))
    return client


async def create_link(api: Client, tenant: Tenant, **params: Any) -> dict[str, Any]:
    params.setdefault("customer", tenant.customer_ids[0])
    resp = await api.post("/v1/portal_sessions", json=params, headers=tenant.auth)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return body


def link_path(created: dict[str, Any]) -> str:
    return f"/r/{created['token']}"


async def enter(portal: Client, created: dict[str, Any]) -> str:
    """Use a link like a browser at top level: POST, follow nothing; returns the portal
    URL it redirected to (the cookie stays in the client's jar)."""
    resp = await portal.post(link_path(created), allow_redirects=False)
    assert resp.status == 303, await resp.text()
    return resp.headers["Location"]


def texts(html: str) -> str:
    """The page's text without tags, spaces collapsed (for 'the page says X')."""
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def add_subscription(
    pool: asyncpg.Pool,
    tenant: Tenant,
    *,
    status: str = "active",
    items: list[dict[str, Any]],
    currency: str = "usd",
    cancel_at_period_end: bool = False,
    trial_end: datetime | None = None,
    period: tuple[str, str] = ("2027-02-01", "2027-03-01"),
    next_charge: tuple[str, int] | None = ("2027-03-01", 4900),
) -> str:
    sub_id = f"sub_{secrets.token_hex(6)}"
    customer = tenant.customer_ids[0]
    start, end = at(period[0]), at(period[1])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO mirror.subscriptions (stripe_id, site_id, customer_id,
                stripe_customer_id, status, currency, cancel_at_period_end, trial_end,
                current_period_start, current_period_end, next_charge_at,
                next_charge_amount, next_charge_currency, created)
            VALUES ($1, $2, $3, 'cus_x', $4, $5, $6, $7, $8, $9, $10, $11, $5, now())
            """,
            sub_id,
            tenant.site_id,
            customer,
            status,
            currency,
            cancel_at_period_end,
            trial_end,
            start,
            end,
            at(next_charge[0]) if next_charge else None,
            next_charge[1] if next_charge else None,
        )
        for item in items:
            await conn.execute(
                """
                INSERT INTO mirror.subscription_items (stripe_id, subscription_id, site_id,
                    price_id, product_name, price_model, unit_amount, tiers, quantity,
                    interval, interval_count, currency)
                VALUES ($1, $2, $3, 'price_x', $4, $5, $6, $7, $8, $9, $10, $11)
                """,
                f"si_{secrets.token_hex(6)}",
                sub_id,
                tenant.site_id,
                item.get("product", "Pro"),
                item.get("model", "flat"),
                item.get("unit_amount"),
                item.get("tiers"),
                item.get("quantity", 1),
                item.get("interval", "month"),
                item.get("interval_count", 1),
                currency,
            )
    return sub_id


async def add_invoice(
    pool: asyncpg.Pool,
    tenant: Tenant,
    *,
    number: str,
    status: str = "paid",
    total: int = 4900,
    currency: str = "usd",
    created: str = "2027-02-01",
    due: str | None = None,
    customer_id: str | None = None,
    site_id: str | None = None,
) -> str:
    invoice_id = f"in_{secrets.token_hex(6)}"
    await pool.execute(
        """
        INSERT INTO mirror.invoices (stripe_id, site_id, customer_id, stripe_customer_id,
            number, status, created, due_date, total, amount_remaining, currency,
            hosted_invoice_url, invoice_pdf)
        VALUES ($1, $2, $3, 'cus_x', $4, $5, $6, $7, $8, 0, $9, $10, $11)
        """,
        invoice_id,
        site_id or tenant.site_id,
        customer_id or tenant.customer_ids[0],
        number,
        status,
        at(created),
        at(due) if due else None,
        total,
        currency,
        f"https://invoice.stripe.com/i/{invoice_id}",
        f"https://pay.stripe.com/invoice/{invoice_id}/pdf",
    )
    return invoice_id


@pytest_asyncio.fixture
async def entered(
    api: Client, portal: Client, tenant: Tenant
) -> AsyncIterator[tuple[dict[str, Any], str]]:
    created = await create_link(api, tenant, return_url="https://app.example.com/account")
    yield created, await enter(portal, created)


async def add_card(
    pool: asyncpg.Pool,
    tenant: Tenant,
    *,
    brand: str,
    last4: str,
    default: bool = False,
    detached: bool = False,
    customer_id: str | None = None,
) -> None:
    await pool.execute(
        """
        INSERT INTO mirror.payment_methods (stripe_id, site_id, customer_id,
            stripe_customer_id, type, card_brand, card_last4, card_exp_month, card_exp_year,
            is_default, created, detached_at)
        VALUES ($1, $2, $3, 'cus_x', 'card', $4, $5, 12, 2027, $6, now(),
                CASE WHEN $7 THEN now() END)
        """,
        f"pm_{secrets.token_hex(6)}",
        tenant.site_id,
        customer_id or tenant.customer_ids[0],
        brand,
        last4,
        default,
        detached,
    )


async def add_usage(
    pool: asyncpg.Pool,
    tenant: Tenant,
    subscription_id: str,
    *,
    meter: str,
    value: str,
    daily: list[dict[str, str]] | None = None,
) -> None:
    """``daily``: the per-day values (``{"day": "2027-02-01", "value": "12"}``) as
    billing-sync mirrors them."""
    await pool.execute(
        """
        INSERT INTO mirror.usage (subscription_item_id, subscription_id, site_id, customer_id,
            meter_id, meter_name, period_start, period_end, value, daily)
        VALUES ($1, $2, $3, $4, 'mtr_1', $5, $6, $7, $8::numeric, $9::text::jsonb)
        """,
        f"si_{secrets.token_hex(6)}",
        subscription_id,
        tenant.site_id,
        tenant.customer_ids[0],
        meter,
        at("2027-02-01"),
        at("2027-03-01"),
        value,
        json.dumps(daily or []),
    )


# --- a real browser ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Custom domains in a real browser (a browser launched with it): any *.example.test
# name reaches our loopback servers (a test picks its own name; nothing else uses that
# reserved TLD).
HOST_RULES = "--host-resolver-rules=MAP *.example.test 127.0.0.1"


async def serve(app: web.Application, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Run ``app`` on a real socket (a browser must reach it); cleanup() stops it."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context()
    try:
        yield ctx
    finally:
        await ctx.close()


# --- sign-in by email code: portal-web, the notifier and an SMTP sink ----------------------


@dataclass
class SignInLive:
    base: str  # the portal, http://127.0.0.1:PORT
    sink: SmtpSink  # where the notifier delivers the codes


@pytest_asyncio.fixture
async def sign_in_live(bf_settings: Settings, bf_slice: Slice) -> AsyncIterator[SignInLive]:
    """portal-web and the notifier (sending to a real SMTP sink), as production runs them."""
    import asyncio
    import base64
    import os

    from notifier.app import CONSUMING
    from notifier.app import create_app as create_notifier
    from notifier.settings import NotifierSettings
    from portal_web.sign_in_limits import SIGN_IN_POLICY, Policy

    sink = SmtpSink()
    await sink.start()
    port = free_port()
    settings = bf_settings.model_copy(update={"portal_base_url": f"http://127.0.0.1:{port}"})
    portal = create_portal(settings)
    portal[SIGN_IN_POLICY] = Policy(per_email="50/minute", per_ip="1000/minute")
    notifier = create_notifier(
        NotifierSettings(
            **{
                **bf_settings.model_dump(),
                "smtp_url": sink.url,
                "notifier_private_key": bf_slice.notifier_private_key,
                "notifier_data_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "dispatch_poll": 0.5,
                "mail_from": "billing@notify.example",
            }
        )
    )
    runners = [await serve(notifier, free_port())]
    try:
        await asyncio.wait_for(notifier[CONSUMING].wait(), 15)
        runners.append(await serve(portal, port))
        yield SignInLive(f"http://127.0.0.1:{port}", sink)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await sink.stop()


# --- billing-sync and the fake Stripe -----------------------------------------------------


@pytest_asyncio.fixture
async def stripe_api(stripe_fake: StripeFake) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.AIOHTTPClient()
    yield stripe_fake.client(http_client=http)
    await http.close_async()  # type: ignore[no-untyped-call]


@pytest_asyncio.fixture
async def billing(
    bf_settings: Settings,
    db_pool: asyncpg.Pool,
    stripe_fake: StripeFake,
    stripe_api: stripe.StripeClient,
    eventually: Eventually,
) -> AsyncIterator[Billing]:
    """billing-sync serving a new tenant's site (see ``billing.py``); the tenant has no
    customer until ``billing.customer()`` makes one in the fake Stripe."""
    from billing_sync.app import create_app as create_billing_sync
    from billing_sync.secrets import SecretBox
    from billing_sync.settings import BillingSyncSettings, new_secrets_key

    from .billing import Billing, register, serving

    settings = BillingSyncSettings(
        **bf_settings.model_dump(),
        billing_secrets_key=new_secrets_key(),
        stripe_api_key=stripe_fake.api_key,
        stripe_api_base=stripe_fake.base_url,
        coalesce_window=0.01,
    )
    queue = f"billfold.rpc.billing.test-{secrets.token_hex(6)}"
    server = TestServer(
        create_billing_sync(settings, reconcile=False, rpc_queue=queue), host="127.0.0.1"
    )
    await server.start_server()
    try:
        await eventually(lambda: serving(server))
        tenant = await make_tenant(db_pool, with_customer=False)
        box = SecretBox(settings.secrets_key_bytes())
        await register(db_pool, box, stripe_api, server, tenant.site_id)
        yield Billing(tenant, server, queue, stripe_api, stripe_fake, db_pool)
    finally:
        await server.close()
