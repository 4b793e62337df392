"""Health, readiness, static files and the page weight budget."""

from __future__ import annotations

from typing import Any

import asyncpg

from billfold.db import DB_POOL
from billfold.settings import Settings
from portal_web.app import create_app

from .conftest import (
    Client,
    Tenant,
    add_invoice,
    add_subscription,
    create_link,
    enter,
    texts,
)


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


async def test_database_down_is_an_html_500_page(
    aiohttp_client: Any, bf_settings: Settings
) -> None:
    portal: Client = await aiohttp_client(create_app(bf_settings))
    await portal.app[DB_POOL].close()  # Postgres gone for this replica
    resp = await portal.get("/r/bfl_" + "a" * 43)
    html = await resp.text()
    assert resp.status == 500
    assert resp.content_type == "text/html"
    assert "This page can't be shown right now." in texts(html)
    assert "Traceback" not in html
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
