"""In a real browser (Debian's Chromium through Playwright): open a link and see Plan and
Invoices; embedded on an allowed origin with third-party cookies blocked; refused on any
other origin; axe-core finds no serious or critical violation, light and dark, desktop
and 360 px."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Frame, Page

from billfold.settings import Settings
from portal_web.app import create_app as create_portal

from .conftest import (
    Client,
    Tenant,
    add_invoice,
    add_subscription,
    add_usage,
    create_link,
    free_port,
    make_tenant,
)


@dataclass
class Live:
    base: str  # the portal, http://127.0.0.1:PORT
    parent_port: int  # a page on http://localhost:PORT2 that frames a given URL
    other_port: int  # the same page on an origin the site does not allow


async def _frame_page(request: web.Request) -> web.Response:
    src = request.query["src"]
    html = (
        "<!doctype html><html lang=en><title>Tenant app</title><h1>Tenant</h1>"
        "<script>window.heights = []; addEventListener('message', "
        "e => window.heights.push([e.origin, e.data]));</script>"
        f'<iframe id=portal title="Billing" src="{src}" width=900 height=700></iframe>'
    )
    return web.Response(text=html, content_type="text/html")


@pytest_asyncio.fixture
async def live(bf_settings: Settings) -> AsyncIterator[Live]:
    port, parent_port, other_port = free_port(), free_port(), free_port()
    settings = bf_settings.model_copy(update={"portal_base_url": f"http://127.0.0.1:{port}"})
    runners = []
    portal_runner = web.AppRunner(create_portal(settings))
    await portal_runner.setup()
    await web.TCPSite(portal_runner, "127.0.0.1", port).start()
    runners.append(portal_runner)
    for p in (parent_port, other_port):
        app = web.Application()
        app.router.add_get("/", _frame_page)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "localhost", p).start()
        runners.append(runner)
    try:
        yield Live(f"http://127.0.0.1:{port}", parent_port, other_port)
    finally:
        for runner in runners:
            await runner.cleanup()


async def _customer_with_data(pool: asyncpg.Pool, **tenant_args: Any) -> Tenant:
    tenant = await make_tenant(pool, **tenant_args)
    sub = await add_subscription(pool, tenant, items=[{"product": "Pro plan", "unit_amount": 4900}])
    # A month of daily usage: the Usage page's bar chart is checked too (axe, 360 px).
    days = [{"day": f"2027-02-{d:02d}", "value": str(100 + 37 * (d % 7))} for d in range(1, 29)]
    await add_usage(pool, tenant, sub, meter="API calls", value="5000", daily=days)
    await add_invoice(pool, tenant, number="INV-0042", status="open", due="2099-01-01")
    await add_invoice(pool, tenant, number="INV-0041", status="paid", created="2027-01-01")
    await pool.execute(
        "INSERT INTO mirror.payment_methods (stripe_id, site_id, customer_id, "
        "stripe_customer_id, type, card_brand, card_last4, card_exp_month, card_exp_year, "
        "is_default) VALUES ($1, $2, $3, 'cus_x', 'card', 'visa', '4242', 12, 2027, true)",
        f"pm_{tenant.slug}",
        tenant.site_id,
        tenant.customer_ids[0],
    )
    return tenant


async def _block_third_party_cookies(context: BrowserContext, page: Page) -> None:
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.setCookieControls", {"enableThirdPartyCookieRestriction": True})


async def test_open_link_and_see_plan_and_invoices(
    live: Live, api: Client, db_pool: asyncpg.Pool, context: BrowserContext
) -> None:
    tenant = await _customer_with_data(db_pool)
    created = await create_link(api, tenant, return_url="https://app.example.com/account")
    page = await context.new_page()
    await page.goto(f"{live.base}/r/{created['token']}")
    # Our script continues by POST on its own; we land on the Plan section.
    await page.wait_for_url(f"{live.base}/p/plan")
    await page.get_by_role("heading", name="Plan", level=1).wait_for()
    assert await page.get_by_text("Pro plan").count() == 1
    assert await page.get_by_text("$49.00 / month").count() == 1
    assert await page.get_by_role("link", name=f"Back to {tenant.name}").count() == 1
    await page.get_by_role("link", name="Invoices").click()
    await page.wait_for_url(f"{live.base}/p/invoices")
    assert await page.get_by_role("cell", name="INV-0042", exact=True).count() == 1
    assert await page.locator(".badge", has_text="Open").count() == 1
    # The link is spent: opening it again says so.
    await page.goto(f"{live.base}/r/{created['token']}")
    await page.get_by_role("heading", name="This link has already been used").wait_for()


async def test_framed_on_allowed_origin_with_third_party_cookies_blocked(
    live: Live, api: Client, db_pool: asyncpg.Pool, context: BrowserContext
) -> None:
    parent = f"http://localhost:{live.parent_port}"
    tenant = await _customer_with_data(db_pool, frame_ancestors=[parent])
    created = await create_link(api, tenant)
    page = await context.new_page()
    await _block_third_party_cookies(context, page)
    await page.goto(f"{parent}/?src={live.base}/r/{created['token']}")
    frame = await _portal_frame(page)
    await frame.wait_for_url(lambda url: "/e/bfs_" in url and url.endswith("/plan"))
    await frame.get_by_role("heading", name="Plan", level=1).wait_for()
    assert await frame.get_by_text("Pro plan").count() == 1
    await frame.get_by_role("link", name="Invoices").click()
    await frame.wait_for_url(lambda url: url.endswith("/invoices"))
    await frame.get_by_role("cell", name="INV-0042", exact=True).wait_for()
    # No cookie carried any of it.
    assert [c for c in await context.cookies() if c["name"].endswith("bf_session")] == []
    # The frame told its parent (and only its parent's origin) how tall it is.
    await page.wait_for_function("window.heights.length > 0")
    origin, data = (await page.evaluate("window.heights"))[-1]
    assert origin == live.base
    assert data["type"] == "billfold:height"
    assert data["height"] > 100


async def test_framing_on_another_origin_is_refused(
    live: Live, api: Client, db_pool: asyncpg.Pool, context: BrowserContext
) -> None:
    allowed = f"http://localhost:{live.parent_port}"
    tenant = await _customer_with_data(db_pool, frame_ancestors=[allowed])
    created = await create_link(api, tenant)
    page = await context.new_page()
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "frame-ancestors" in m.text else None)
    await page.goto(f"http://localhost:{live.other_port}/?src={live.base}/r/{created['token']}")
    frame = await _portal_frame(page)
    await page.wait_for_function("document.readyState === 'complete'")
    # Chromium shows its own error page instead of ours: nothing of the portal rendered.
    with pytest.raises(Exception):  # noqa: B017 - no portal content in the frame
        await frame.get_by_role("heading", name="Continue", exact=False).wait_for(timeout=1500)
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.link_uses WHERE portal_session_id = $1", created["id"]
        )
        == 0
    )


async def _portal_frame(page: Page) -> Frame:
    handle = await page.wait_for_selector("iframe#portal")
    assert handle is not None
    frame = await handle.content_frame()
    assert frame is not None
    return frame


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 360])
async def test_axe_finds_no_serious_violations(
    live: Live,
    api: Client,
    db_pool: asyncpg.Pool,
    browser: Browser,
    scheme: str,
    width: int,
) -> None:
    tenant = await _customer_with_data(db_pool, primary_color="#ffcc00")  # a hard colour
    created = await create_link(api, tenant, return_url="https://app.example.com/account")
    context = await browser.new_context(
        viewport={"width": width, "height": 800},
        color_scheme=scheme,  # type: ignore[arg-type]
    )
    axe = Axe()
    try:
        page = await context.new_page()
        # Without our script the link page stays put (as for a visitor without script),
        # so it can be checked itself; the button then continues.
        await page.route("**/static/portal.js", lambda route: route.abort())
        for path in (f"/r/{created['token']}", "/r/bfl_unknown"):
            await page.goto(live.base + path)
            await _check(axe, page, path, width)
        await page.goto(f"{live.base}/r/{created['token']}")
        await page.get_by_role("button", name="Continue").click()
        await page.wait_for_url(f"{live.base}/p/plan")
        for path in ("/p/plan", "/p/invoices", "/p/payment-methods", "/p/usage", "/p/profile"):
            await page.goto(live.base + path)
            if path == "/p/usage":
                assert await page.locator("figure.usage-chart rect.bar").count() == 28
            await _check(axe, page, path, width)
            # No horizontal scrolling of the page itself, down to 360 px.
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (path, width, overflow)
    finally:
        await context.close()


async def _check(axe: Axe, page: Page, path: str, width: int) -> None:
    results = await axe.run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, (path, width, [(v["id"], [n["html"] for n in v["nodes"]][:3]) for v in bad])
