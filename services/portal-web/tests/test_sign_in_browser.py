"""Sign-in by email code in a real browser (Chromium through Playwright), the code read
from the email the notifier (in process) sent to a real SMTP server on loopback; the
account chooser for an email several customers share, switching between them; axe-core
on every sign-in page, light and dark, desktop and 360 px."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page

from .conftest import SignInLive, Tenant, create_link, make_tenant
from .signin_helpers import add_customer, other_code
from .signin_helpers import emailed_code as _emailed_code
from .signin_helpers import mails as _mails
from .test_browser import _check


@pytest_asyncio.fixture
async def live(sign_in_live: SignInLive) -> SignInLive:
    return sign_in_live


async def _sign_in(page: Page, live: SignInLive, tenant: Tenant, email: str, n: int = 1) -> None:
    await page.goto(f"{live.base}/s/{tenant.slug}")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_role("button", name="Email me a code").click()
    await page.get_by_role("heading", name="Enter your code").wait_for()
    code = await _emailed_code(live.sink, email, tenant, n)
    await page.get_by_label("6-digit code").fill(code)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_by_code_end_to_end(
    live: SignInLive,
    db_pool: asyncpg.Pool,
    context: BrowserContext,
) -> None:
    tenant = await make_tenant(db_pool)
    page = await context.new_page()
    await _sign_in(page, live, tenant, "ada@example.com")
    await page.wait_for_url(f"{live.base}/p/plan")
    await page.get_by_role("heading", name="Plan", level=1).wait_for()
    assert len(_mails(live.sink, "ada@example.com", tenant)) == 1
    # One customer for this email: no chooser, nothing to switch to.
    assert await page.get_by_role("link", name="Switch account").count() == 0
    await page.get_by_role("link", name="Profile").click()
    await page.get_by_text("Ada Lovelace").wait_for()


async def test_chooser_for_a_shared_email_and_switching(
    live: SignInLive,
    db_pool: asyncpg.Pool,
    context: BrowserContext,
) -> None:
    tenant = await make_tenant(db_pool)
    await db_pool.execute(
        "UPDATE portal.sites SET account_label_fields = '{name,external_id}' WHERE id = $1",
        tenant.site_id,
    )
    await add_customer(db_pool, tenant.site_id, "Ada@Example.com", "Analytical Engines", "ae-7")
    other = await make_tenant(db_pool, customer_name="Elsewhere Ltd")  # ada@example.com too
    page = await context.new_page()
    await _sign_in(page, live, tenant, "ada@example.com")
    await page.wait_for_url(f"{live.base}/s/{tenant.slug}/accounts")
    await page.get_by_role("heading", name="Choose an account").wait_for()
    buttons = page.locator("ul.accounts button")
    assert await buttons.all_inner_texts() == ["Ada Lovelace · ext-1", "Analytical Engines · ae-7"]
    # Another site's customer with the same email is never listed.
    assert await page.get_by_text("Elsewhere Ltd").count() == 0
    assert other.customer_ids[0] not in await page.content()

    await page.get_by_role("button", name="Analytical Engines · ae-7").click()
    await page.wait_for_url(f"{live.base}/p/plan")
    await page.goto(f"{live.base}/p/profile")
    await page.get_by_text("Analytical Engines").wait_for()
    # Switch without another code.
    await page.get_by_role("link", name="Switch account").click()
    await page.get_by_role("button", name="Ada Lovelace · ext-1").click()
    await page.wait_for_url(f"{live.base}/p/plan")
    await page.goto(f"{live.base}/p/profile")
    await page.get_by_text("Ada Lovelace").wait_for()
    assert len(_mails(live.sink, "ada@example.com", tenant)) == 1  # one code for all of it
    # The switched-from session ended with the switch.
    live_sessions = await db_pool.fetchval(
        "SELECT count(*) FROM web.browser_sessions WHERE site_id = $1 AND ended_at IS NULL",
        tenant.site_id,
    )
    assert live_sessions == 1
    # Choosing another site's customer by hand is "not found".
    resp = await page.request.post(
        f"{live.base}/s/{tenant.slug}/accounts",
        form={"customer": other.customer_ids[0]},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert resp.status == 404


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 360])
async def test_axe_on_sign_in_pages(
    live: SignInLive,
    db_pool: asyncpg.Pool,
    browser: Browser,
    scheme: str,
    width: int,
) -> None:
    tenant = await make_tenant(db_pool, primary_color="#ffcc00")
    await add_customer(db_pool, tenant.site_id, "ada@example.com", "Second Co")
    context = await browser.new_context(
        viewport={"width": width, "height": 800},
        color_scheme=scheme,  # type: ignore[arg-type]
    )
    axe = Axe()
    try:
        page = await context.new_page()
        await page.goto(f"{live.base}/s/{tenant.slug}")
        await _check(axe, page, "sign-in", width)
        await page.get_by_role("button", name="Email me a code").click()  # empty: error
        await page.get_by_text("Enter an email address such as").wait_for()
        await _check(axe, page, "sign-in error", width)
        await page.get_by_label("Email address").fill("ada@example.com")
        await page.get_by_role("button", name="Email me a code").click()
        await page.get_by_role("heading", name="Enter your code").wait_for()
        await _check(axe, page, "code", width)
        code = await _emailed_code(live.sink, "ada@example.com", tenant)
        await page.get_by_label("6-digit code").fill(other_code(code))
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_text("That code is not right").wait_for()
        await _check(axe, page, "code error", width)
        await page.get_by_label("6-digit code").fill(code)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Choose an account").wait_for()
        await _check(axe, page, "chooser", width)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (width, overflow)
    finally:
        await context.close()


async def test_expired_link_recovers_through_sign_in_to_its_section(
    live: SignInLive,
    api: Any,
    db_pool: asyncpg.Pool,
    context: BrowserContext,
) -> None:
    tenant = await make_tenant(db_pool)
    created = await create_link(api, tenant, flow={"type": "payment_method_update"})
    await db_pool.execute(
        "UPDATE portal.portal_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 hour' WHERE id = $1",
        created["id"],
    )
    page = await context.new_page()
    await page.goto(f"{live.base}/r/{created['token']}")
    await page.get_by_role("heading", name="This link has expired").wait_for()
    # Never whose link it was.
    html = await page.content()
    assert "Ada" not in html
    assert "ada@example.com" not in html
    await _check(Axe(), page, "expired link", 1280)
    await page.get_by_role("link", name="Email me a sign-in code").click()
    await page.get_by_label("Email address").fill("ada@example.com")
    await page.get_by_role("button", name="Email me a code").click()
    code = await _emailed_code(live.sink, "ada@example.com", tenant)
    await page.get_by_label("6-digit code").fill(code)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{live.base}/p/payment-methods")
    await page.get_by_role("heading", name="Payment methods", level=1).wait_for()
