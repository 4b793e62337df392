"""The customer's actions in a real browser (Debian's Chromium), against the real
billing-sync over RPC and the fake Stripe's hosted pages: cancel with a reason and
resume; update the card on the hosted setup page (at top level and from a frame) and
see it as the default; download a PDF; pay an open invoice; hand over to the hosted
invoice page when the bank wants the customer; edit the profile and see a field error;
axe-core on the new states, light and dark."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Frame, Page

from billfold.settings import Settings
from billfold_testing.waiting import Eventually
from portal_web.app import create_app as create_portal

from .billing import Billing
from .conftest import Client, create_link, free_port

NEW_CARD = "5555 5555 5555 4444"  # Mastercard: not the Visa the customer starts with


@dataclass
class Live:
    base: str
    parent: str  # a tenant page on another origin that frames ?src=


async def _frame_page(request: web.Request) -> web.Response:
    src = request.query["src"]
    return web.Response(
        text=(
            "<!doctype html><html lang=en><title>Tenant app</title><h1>Tenant</h1>"
            f'<iframe id=portal title="Billing" src="{src}" width=900 height=900></iframe>'
        ),
        content_type="text/html",
    )


@pytest_asyncio.fixture
async def live(bf_settings: Settings, billing: Billing) -> AsyncIterator[Live]:
    port, parent_port = free_port(), free_port()
    settings = bf_settings.model_copy(
        update={"portal_base_url": f"http://127.0.0.1:{port}", "rpc_timeout": 3.0}
    )
    portal = web.AppRunner(create_portal(settings, rpc_queue=billing.queue))
    await portal.setup()
    await web.TCPSite(portal, "127.0.0.1", port).start()
    parent_app = web.Application()
    parent_app.router.add_get("/", _frame_page)
    parent = web.AppRunner(parent_app)
    await parent.setup()
    await web.TCPSite(parent, "localhost", parent_port).start()
    try:
        yield Live(f"http://127.0.0.1:{port}", f"http://localhost:{parent_port}")
    finally:
        await parent.cleanup()
        await portal.cleanup()


async def _open(page: Page, live: Live, api: Client, billing: Billing, **link: object) -> None:
    created = await create_link(api, billing.tenant, **link)
    await page.goto(f"{live.base}/r/{created['token']}")
    await page.wait_for_url(lambda url: "/p/" in url)


async def _status(page: Page | Frame) -> str:
    region = page.locator(".flash").first
    await region.wait_for()
    return await region.inner_text()


async def test_cancel_with_a_reason_then_resume(
    live: Live, api: Client, billing: Billing, context: BrowserContext, eventually: Eventually
) -> None:
    customer = await billing.customer(eventually, subscription={})
    page = await context.new_page()
    await _open(page, live, api, billing)
    await page.get_by_role("link", name="Cancel Pro plan").click()
    await page.get_by_role("heading", name="Cancel your plan", level=1).wait_for()
    assert "Your plan stays active until" in await page.locator(".what-happens").inner_text()
    await page.get_by_label("It's too expensive").check()
    await page.get_by_label("Anything else you want to tell us? (optional)").fill("Budget cut")
    await page.get_by_role("button", name="Cancel plan").click()
    await page.wait_for_url(f"{live.base}/p/plan?done=cancelled")
    assert "Your plan is cancelled" in await _status(page)
    assert await page.locator(".badge", has_text="Cancels").count() == 1
    sub = await billing.api.v1.subscriptions.retrieve_async(str(customer.subscription))
    assert sub.cancel_at_period_end is True
    assert sub.cancellation_details is not None
    assert sub.cancellation_details.comment == "Budget cut"

    await page.get_by_role("button", name="Resume Pro plan").click()
    await page.wait_for_url(f"{live.base}/p/plan?done=resumed")
    assert "Your plan continues" in await _status(page)
    assert await page.locator(".badge", has_text="Active").count() == 1


async def test_update_card_on_the_hosted_page_shows_it_as_default(
    live: Live, api: Client, billing: Billing, context: BrowserContext, eventually: Eventually
) -> None:
    await billing.customer(eventually, subscription={})
    page = await context.new_page()
    await _open(page, live, api, billing)
    await page.get_by_role("link", name="Payment methods").click()
    assert await page.locator(".pm", has_text="Visa •••• 4242").count() == 1
    await page.get_by_role("button", name="Add / update card").click()
    # Our script goes on to the fake Stripe's Checkout page at once.
    await page.wait_for_url(lambda url: "/checkout/cs_" in url)
    await page.get_by_label("Card number").fill(NEW_CARD)
    await page.get_by_role("button", name="Save card").click()
    # Back in the portal: "Updating…" until billing-sync has made it the default, then
    # the confirmation and the new card first, as the default.
    await page.wait_for_url(lambda url: "/p/payment-methods" in url)
    await page.get_by_text("Card added. It is now your default card.").wait_for(timeout=30000)
    first = page.locator(".pm").first
    assert "Mastercard •••• 4444" in await first.inner_text()
    assert "Default" in await first.inner_text()


async def test_update_card_from_a_frame_opens_a_tab_and_the_frame_shows_the_result(
    live: Live, api: Client, billing: Billing, browser: Browser, eventually: Eventually
) -> None:
    await billing.customer(eventually, subscription={})
    await billing.pool.execute(
        "UPDATE portal.sites SET frame_ancestors = $2 WHERE id = $1",
        billing.tenant.site_id,
        [live.parent],
    )
    created = await create_link(api, billing.tenant)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{live.parent}/?src={live.base}/r/{created['token']}")
        handle = await page.wait_for_selector("iframe#portal")
        assert handle is not None
        frame = await handle.content_frame()
        assert frame is not None
        await frame.wait_for_url(lambda url: "/e/bfs_" in url)
        await frame.get_by_role("link", name="Payment methods").click()
        await frame.get_by_role("button", name="Add / update card").click()
        await frame.get_by_role("heading", name="Update your card").wait_for()
        # Stripe's page refuses frames: it opens in a new tab.
        async with context.expect_page() as opened:
            await frame.get_by_role("link", name="Continue to the secure card page").click()
        tab = await opened.value
        await tab.wait_for_url(lambda url: "/checkout/cs_" in url)
        await tab.get_by_label("Card number").fill(NEW_CARD)
        await tab.get_by_role("button", name="Save card").click()
        await tab.get_by_text("You can close this tab and return to the billing portal.").wait_for()
        await tab.close()
        # Back on the tenant's page: the frame looks again by itself.
        await page.bring_to_front()
        await frame.get_by_text("Card added. It is now your default card.").wait_for(timeout=30000)
        assert "Mastercard •••• 4444" in await frame.locator(".pm").first.inner_text()
        assert [c for c in await context.cookies() if c["name"].endswith("bf_session")] == []
    finally:
        await context.close()


async def test_pay_an_open_invoice_and_download_its_pdf(
    live: Live, api: Client, billing: Billing, context: BrowserContext, eventually: Eventually
) -> None:
    customer = await billing.customer(eventually, subscription=None, open_invoice=True)
    page = await context.new_page()
    await _open(page, live, api, billing)
    await page.get_by_role("link", name="Invoices").click()
    pdf = page.get_by_role("link", name="as PDF")
    href = await pdf.get_attribute("href")
    assert href is not None
    resp = await context.request.get(href)
    assert resp.ok
    assert resp.headers["content-type"] == "application/pdf"
    assert (await resp.body()).startswith(b"%PDF")

    await page.get_by_role("button", name="Pay invoice").click()
    await page.wait_for_url(f"{live.base}/p/invoices?done=paid")
    assert "the invoice is paid" in await _status(page)
    assert await page.locator(".badge", has_text="Paid").count() == 1
    assert await page.get_by_role("button", name="Pay invoice").count() == 0
    inv = await billing.api.v1.invoices.retrieve_async(str(customer.invoice))
    assert inv.status == "paid"


async def test_pay_needing_authentication_hands_over_to_the_hosted_invoice_page(
    live: Live, api: Client, billing: Billing, context: BrowserContext, eventually: Eventually
) -> None:
    customer = await billing.customer(
        eventually, cards=("pm_card_authenticationRequired",), open_invoice=True
    )
    page = await context.new_page()
    await _open(page, live, api, billing)
    await page.get_by_role("link", name="Invoices").click()
    await page.get_by_role("button", name="Pay invoice").click()
    await page.wait_for_url(lambda url: "failed=authentication_required" in url)
    assert "Your bank needs you to confirm this payment" in await _status(page)
    async with context.expect_page() as opened:
        await page.get_by_role("link", name="on the secure page").click()
    hosted = await opened.value
    await hosted.get_by_role("button", name="Complete authentication").click()
    await hosted.wait_for_load_state()

    async def paid() -> bool:
        inv = await billing.api.v1.invoices.retrieve_async(str(customer.invoice))
        return inv.status == "paid"

    await eventually(paid)
    await hosted.close()
    # Meanwhile the portal waited for it, and shows it paid once the mirror has it.
    await page.get_by_text("Thank you, the invoice is paid.").wait_for(timeout=30000)
    assert await page.locator(".badge", has_text="Paid").count() == 1


async def test_edit_profile_shows_a_field_error_then_saves(
    live: Live, api: Client, billing: Billing, context: BrowserContext, eventually: Eventually
) -> None:
    customer = await billing.customer(eventually, subscription=None)
    page = await context.new_page()
    await _open(page, live, api, billing)
    await page.get_by_role("link", name="Profile").click()
    await page.get_by_role("link", name="Edit details").click()
    await page.get_by_label("Name").fill("Ada King")
    await page.get_by_label("Email").fill("not-an-email")
    await page.get_by_label("Country").select_option("GB")
    await page.get_by_label("Street and number").fill("12 St James's Square")
    await page.get_by_label("City").fill("London")
    await page.get_by_role("button", name="Save").click()
    # The error beside the field, tied to it; what was typed is kept.
    email = page.get_by_label("Email")
    assert await email.get_attribute("aria-invalid") == "true"
    described = await email.get_attribute("aria-describedby")
    assert described == "e-email"
    assert "Enter an email address like" in await page.locator(f"#{described}").inner_text()
    assert await page.get_by_label("Name").input_value() == "Ada King"
    assert await page.get_by_label("City").input_value() == "London"

    await email.fill("ada@example.org")
    await page.get_by_label("Add a tax ID: kind").select_option("gb_vat")
    await page.get_by_label("Tax ID number").fill("GB123456789")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(f"{live.base}/p/profile?done=profile_saved")
    assert "Your details are saved." in await _status(page)
    shown = await page.locator("main").inner_text()
    assert "Ada King" in shown
    assert "ada@example.org" in shown
    assert "GB123456789" in shown
    cus = await billing.api.v1.customers.retrieve_async(customer.stripe_id)
    assert cus.name == "Ada King"
    assert cus.address is not None
    assert cus.address.city == "London"


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_axe_on_the_action_states(
    live: Live,
    api: Client,
    billing: Billing,
    browser: Browser,
    eventually: Eventually,
    scheme: str,
) -> None:
    customer = await billing.customer(eventually, subscription={}, open_invoice=True)
    context = await browser.new_context(color_scheme=scheme)  # type: ignore[arg-type]
    axe = Axe()
    try:
        page = await context.new_page()
        await _open(page, live, api, billing)
        checks: list[tuple[str, str]] = [
            (f"/p/plan/{customer.subscription}/cancel", "Cancel your plan"),
            ("/p/plan?done=cancelled", "Plan"),
            ("/p/invoices?failed=card_declined", "Invoices"),
            ("/p/payment-methods?failed=unavailable", "Payment methods"),
            ("/p/payment-methods/update", "Update your card"),
            ("/p/profile/edit", "Edit your details"),
        ]
        for path, heading in checks:
            await page.goto(live.base + path)
            await page.get_by_role("heading", name=heading, level=1).wait_for()
            await _axe(axe, page, path)
        # The profile form with its errors showing.
        await page.goto(f"{live.base}/p/profile/edit")
        await page.get_by_label("Name").fill("")
        await page.get_by_label("Email").fill("nope")
        await page.get_by_role("button", name="Save").click()
        await page.locator(".field-error").first.wait_for()
        await _axe(axe, page, "profile errors")
    finally:
        await context.close()


async def _axe(axe: Axe, page: Page, what: str) -> None:
    results = await axe.run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, (what, [(v["id"], [n["html"] for n in v["nodes"]][:3]) for v in bad])
