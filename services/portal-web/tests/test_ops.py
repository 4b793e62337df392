"""Health, readiness, static files and the page weight budget."""

from __future__ import annotations

import asyncpg

from .conftest import Client, Tenant, add_invoice, add_subscription, create_link, enter


async def test_health_and_readiness(portal: Client) -> None:
    resp = await portal.get("/healthz")
    assert resp.status == 200
    resp = await portal.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"postgres", "redis", "rabbitmq"}


async def test_page_budgets(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    # Budgets from the portal's UX notes: HTML < 30 KB, CSS < 20 KB, script < 10 KB.
    await add_subscription(db_pool, tenant, items=[{"product": "Pro", "unit_amount": 4900}])
    for i in range(12):
        await add_invoice(db_pool, tenant, number=f"INV-{i:04d}")
    await enter(portal, await create_link(api, tenant))
    for path in ("/p/plan", "/p/invoices"):
        resp = await portal.get(path)
        assert resp.status == 200
        assert len(await resp.read()) < 30_000, path
    css = await portal.get("/static/portal.css")
    js = await portal.get("/static/portal.js")
    assert css.status == js.status == 200
    assert len(await css.read()) < 20_000
    assert len(await js.read()) < 10_000
    assert css.headers["Cache-Control"].startswith("public")
