"""Payment methods, Usage and Profile (read only): what they say, for whom, hidden → 404."""

from __future__ import annotations

import asyncpg
import pytest

from .conftest import (
    Client,
    Tenant,
    add_card,
    add_subscription,
    add_usage,
    create_link,
    enter,
    make_tenant,
    texts,
)


async def test_payment_methods_default_first(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    await add_card(db_pool, tenant, brand="mastercard", last4="4444")
    await add_card(db_pool, tenant, brand="visa", last4="4242", default=True)
    await add_card(db_pool, tenant, brand="amex", last4="0005", detached=True)
    other = await make_tenant(db_pool)
    await add_card(db_pool, other, brand="visa", last4="9999")
    await enter(portal, await create_link(api, tenant, locale="en"))
    page = texts(await (await portal.get("/p/payment-methods")).text())
    assert "Visa •••• 4242 Expires 12/2027 Default" in page
    assert page.index("4242") < page.index("Mastercard •••• 4444")
    assert "0005" not in page
    assert "9999" not in page


async def test_usage_and_profile_in_german(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    evil = "<b>Ada</b>"
    tenant = await make_tenant(db_pool, customer_name=evil)
    sub = await add_subscription(db_pool, tenant, items=[{"product": "API", "unit_amount": 1}])
    await add_usage(db_pool, tenant, sub, meter="API calls", value="12345.5")
    await db_pool.execute(
        """
        UPDATE mirror.customers SET phone = '+49 30 1234567',
            address = '{"line1": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin",
                        "country": "DE"}'::jsonb,
            tax_ids = '[{"type": "eu_vat", "value": "DE123456789"}]'::jsonb
        WHERE id = $1
        """,
        tenant.customer_ids[0],
    )
    await enter(portal, await create_link(api, tenant, locale="de"))
    page = texts(await (await portal.get("/p/usage")).text())
    assert "API calls 12.345,5" in page
    assert "01.02.2027 bis 01.03.2027" in page
    html = await (await portal.get("/p/profile")).text()
    page = texts(html)
    assert "Rechnungsadresse Hauptstr. 1 10115 Berlin Deutschland" in page
    assert "EU VAT: DE123456789" in page
    assert "+49 30 1234567" in page
    assert "&lt;b&gt;Ada&lt;/b&gt;" in html
    assert evil not in html


async def test_empty_states(api: Client, portal: Client, db_pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(db_pool)
    await enter(portal, await create_link(api, tenant))
    assert "No payment method on file." in texts(
        await (await portal.get("/p/payment-methods")).text()
    )
    assert "No usage this period." in texts(await (await portal.get("/p/usage")).text())


@pytest.mark.parametrize(
    ("section", "path"),
    [("payment_methods", "/p/payment-methods"), ("usage", "/p/usage"), ("profile", "/p/profile")],
)
async def test_hidden_section_is_404(
    api: Client, portal: Client, tenant: Tenant, section: str, path: str
) -> None:
    await enter(portal, await create_link(api, tenant, sections={section: {"enabled": False}}))
    assert (await portal.get(path)).status == 404
    assert f'href="{path}"' not in await (await portal.get("/p/plan")).text()
