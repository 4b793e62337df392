"""The drop-in script in a real browser (Debian's Chromium through Playwright), on the
example tenant page (examples/dropin/index.html) served from ANOTHER origin than the
portal, with third-party cookies blocked: sign-in by code in the modal (the code read
from the SMTP sink the notifier delivers to), the account chooser, then the portal;
focus moved in, trapped (Tab and Shift+Tab), returned on Escape; 360 px; the events
ready, close and action; messages from a wrong origin or window ignored; a session
link opened directly; axe-core on the new pages. And a custom domain in the browser
(Chromium maps *.example.test to loopback): sign-in at ``/``, host-only cookies, an
unknown host refused."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest_asyncio
from aiohttp import web
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Frame, Page

from billfold.settings import Settings
from billfold_testing.browser import CHROMIUM, CHROMIUM_ARGS
from billfold_testing.smtp_sink import SmtpSink
from billfold_testing.waiting import Eventually
from portal_web.app import create_app as create_portal
from session_api.sites import repository as sites

from .billing import Billing
from .conftest import (
    HOST_RULES,
    Client,
    SignInLive,
    Tenant,
    create_link,
    free_port,
    make_tenant,
    serve,
)
from .signin_helpers import add_customer, emailed_code, mails
from .test_browser import _block_third_party_cookies, _check

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dropin" / "index.html"
EXAMPLE_PORTAL = "http://127.0.0.1:8081"  # what the example page names; replaced here
_SLUG = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

# Every message the tenant page receives, [origin, type], recorded before any script.
RECORD_MESSAGES = (
    "window.rawMessages = []; addEventListener('message', e => window.rawMessages.push("
    "[e.origin, e.data && typeof e.data === 'object' ? e.data.type : String(e.data)]));"
)
# A page of another origin, framed by the tenant page, posting look-alike messages.
SPOOF = (
    "<!doctype html><html lang=en><title>Ad</title><script>"
    "for (const m of [{type: 'billfold:action', action: 'invoice.pay'},"
    " {type: 'billfold:ready'}, {type: 'billfold:escape'}])"
    " parent.postMessage(m, '*');</script>"
)


@dataclass
class DropIn:
    portal: str  # http://127.0.0.1:PORT
    tenant: str  # the example page's origin, http://localhost:P1
    other: str  # the same pages on an origin no site allows, http://localhost:P2
    sink: SmtpSink | None = None

    def page_url(self, tenant: Tenant, origin: str | None = None) -> str:
        return f"{origin or self.tenant}/?site={tenant.slug}"


def _tenant_app(portal: str) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        site = request.query.get("site", "demo")
        assert _SLUG.match(site)
        html = EXAMPLE.read_text(encoding="utf-8")
        html = html.replace(EXAMPLE_PORTAL, portal).replace('site: "demo"', f'site: "{site}"')
        return web.Response(text=html, content_type="text/html")

    async def spoof(_: web.Request) -> web.Response:
        return web.Response(text=SPOOF, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/spoof", spoof)
    return app


@contextlib.asynccontextmanager
async def tenant_pages(portal: str) -> AsyncIterator[tuple[str, str]]:
    """The example page on two origins of its own (localhost: another site than the
    portal's 127.0.0.1, so its frame is third-party)."""
    ports = free_port(), free_port()
    runners = [await serve(_tenant_app(portal), p, host="localhost") for p in ports]
    try:
        yield f"http://localhost:{ports[0]}", f"http://localhost:{ports[1]}"
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest_asyncio.fixture
async def dropin(sign_in_live: SignInLive) -> AsyncIterator[DropIn]:
    async with tenant_pages(sign_in_live.base) as (tenant, other):
        yield DropIn(sign_in_live.base, tenant, other, sign_in_live.sink)


async def _open_page(context: BrowserContext, url: str) -> Page:
    page = await context.new_page()
    await _block_third_party_cookies(context, page)
    await page.add_init_script(RECORD_MESSAGES)
    await page.goto(url)
    await page.wait_for_function("typeof window.Billfold === 'object'")
    return page


async def _modal_frame(page: Page) -> Frame:
    handle = await page.wait_for_selector("dialog.billfold-modal iframe")
    assert handle is not None
    frame = await handle.content_frame()
    assert frame is not None
    return frame


async def _events(page: Page, name: str) -> list[Any]:
    events: list[list[Any]] = await page.evaluate("window.billfoldEvents")
    return [detail for event, detail in events if event == name]


IN_DIALOG = "!!(document.activeElement && document.activeElement.closest('dialog.billfold-modal'))"


async def _focus_in_dialog(page: Page) -> bool:
    return bool(await page.evaluate(IN_DIALOG))


async def test_sign_in_by_code_in_the_modal_with_third_party_cookies_blocked(
    dropin: DropIn, db_pool: asyncpg.Pool, context: BrowserContext
) -> None:
    assert dropin.sink is not None
    tenant = await make_tenant(db_pool, frame_ancestors=[dropin.tenant])
    await add_customer(db_pool, tenant.site_id, "ada@example.com", "Second Co")
    page = await _open_page(context, dropin.page_url(tenant))
    opener = page.get_by_role("button", name="Billing")
    await opener.click()

    dialog = page.get_by_role("dialog", name="Billing")
    await dialog.wait_for()
    assert await dialog.get_attribute("aria-modal") == "true"
    assert await _focus_in_dialog(page)  # focus moved in
    assert await page.evaluate("document.documentElement.style.overflow") == "hidden"

    frame = await _modal_frame(page)
    await frame.get_by_label("Email address").fill("ada@example.com")
    await frame.get_by_role("button", name="Email me a code").click()
    await frame.get_by_role("heading", name="Enter your code").wait_for()
    code = await emailed_code(dropin.sink, "ada@example.com", tenant)
    await frame.get_by_label("6-digit code").fill(code)
    await frame.get_by_role("button", name="Sign in").click()
    # Two accounts share the email: the chooser, inside the frame, then the portal.
    await frame.get_by_role("heading", name="Choose an account").wait_for()
    assert "/e/bfi_" in frame.url
    await frame.get_by_role("button", name="Second Co").click()
    await frame.get_by_role("heading", name="Plan", level=1).wait_for()
    assert re.search(r"/e/bfs_[A-Za-z0-9_-]+/plan$", frame.url), frame.url
    await frame.get_by_role("link", name="Profile").click()
    await frame.get_by_text("Second Co").first.wait_for()
    # Switch account inside the frame, without another code.
    await frame.get_by_role("link", name="Switch account").click()
    await frame.get_by_role("button", name="Ada Lovelace").click()
    await frame.get_by_role("heading", name="Plan", level=1).wait_for()
    await frame.get_by_role("link", name="Profile").click()
    await frame.get_by_text("Ada Lovelace").first.wait_for()
    assert len(mails(dropin.sink, "ada@example.com", tenant)) == 1
    # No cookie carried any of it (the frame's cookies were blocked anyway).
    assert [c for c in await context.cookies() if c["name"].startswith("bf_")] == []

    # "ready" once for this opening, however many pages the frame showed; and every
    # message from the portal came from the portal's origin.
    assert await _events(page, "ready") == [{}]
    raw = [m for m in await page.evaluate("window.rawMessages") if "billfold" in str(m[1])]
    assert raw
    assert {origin for origin, _ in raw} == {dropin.portal}

    # Escape inside the frame closes the modal; focus returns to the opener.
    await frame.get_by_role("link", name="Plan").focus()
    # Key down only: the keydown closes the modal and removes the frame, so a key-up
    # sent to that frame could find it gone (Playwright: "target closed").
    await page.keyboard.down("Escape")
    await dialog.wait_for(state="detached")
    await page.keyboard.up("Escape")
    assert await page.evaluate("document.activeElement.id") == "billing"
    assert await _events(page, "close") == [{}]
    assert await page.evaluate("document.documentElement.style.overflow") == ""


async def test_focus_is_trapped_and_escape_returns_it_at_360px(
    dropin: DropIn, db_pool: asyncpg.Pool, browser: Browser
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=[dropin.tenant])
    context = await browser.new_context(viewport={"width": 360, "height": 740})
    try:
        page = await _open_page(context, dropin.page_url(tenant))
        await page.get_by_role("button", name="Billing").click()
        await page.wait_for_function("window.billfoldEvents.some(e => e[0] === 'ready')")
        frame = await _modal_frame(page)
        await frame.get_by_label("Email address").wait_for()
        box = await page.locator("dialog.billfold-modal").bounding_box()
        assert box is not None
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= 360, box
        assert box["y"] >= 0, box
        assert box["y"] + box["height"] <= 740, box
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0

        seen: set[str] = set()
        for key in ["Tab"] * 14 + ["Shift+Tab"] * 14:
            await page.keyboard.press(key)
            # Focus leaving or entering the frame (another renderer process) moves a
            # moment after the key: wait for it to settle inside the dialog. Focus that
            # escaped to the page would never come back by itself.
            await page.wait_for_function(IN_DIALOG, timeout=5000)
            seen.add(await page.evaluate("document.activeElement.tagName"))
        # It went round: the close button and the portal inside the frame, both ways.
        assert {"BUTTON", "IFRAME"} <= seen, seen

        await page.get_by_role("button", name="Close").focus()
        await page.keyboard.press("Escape")
        await page.locator("dialog.billfold-modal").wait_for(state="detached")
        assert await page.evaluate("document.activeElement.id") == "billing"
        assert await _events(page, "close") == [{}]
    finally:
        await context.close()


async def test_messages_from_a_wrong_origin_or_window_are_ignored(
    dropin: DropIn, db_pool: asyncpg.Pool, context: BrowserContext
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=[dropin.tenant])
    page = await _open_page(context, dropin.page_url(tenant))
    # Another origin's URL is never framed by the modal.
    refused = await page.evaluate(
        "() => { try { Billfold.open({url: 'https://evil.example/r/bfl_x'}); return null }"
        " catch (e) { return e.message } }"
    )
    assert refused is not None
    assert "must be a link on" in refused
    assert await page.locator("dialog").count() == 0

    await page.get_by_role("button", name="Billing").click()
    await page.wait_for_function("window.billfoldEvents.some(e => e[0] === 'ready')")
    # The page itself, and a frame of another origin, post look-alikes: ignored.
    await page.evaluate(
        "for (const m of [{type: 'billfold:action', action: 'invoice.pay'},"
        " {type: 'billfold:escape'}]) window.postMessage(m, '*')"
    )
    await page.evaluate(
        "url => { const f = document.createElement('iframe'); f.src = url;"
        " f.title = 'ad'; document.body.appendChild(f); }",
        f"{dropin.other}/spoof",
    )
    await page.wait_for_function(
        "origin => window.rawMessages.filter(m => m[0] === origin).length >= 3", arg=dropin.other
    )
    # A second frame of the portal's own origin (not the modal's): its Escape is ignored.
    await page.evaluate(
        "url => { const f = document.createElement('iframe'); f.id = 'second';"
        " f.title = 'second'; f.src = url; document.body.appendChild(f); }",
        dropin.page_url(tenant).replace(dropin.tenant, dropin.portal).replace("/?site=", "/s/"),
    )
    second_handle = await page.wait_for_selector("iframe#second")
    assert second_handle is not None
    second = await second_handle.content_frame()
    assert second is not None
    await second.get_by_label("Email address").wait_for()
    before = await page.evaluate(
        "origin => window.rawMessages.filter(m => m[0] === origin).length", dropin.portal
    )
    await second.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    await page.wait_for_function(
        "([origin, n]) => window.rawMessages.filter(m => m[0] === origin).length > n",
        arg=[dropin.portal, before],
    )
    assert await page.evaluate("Billfold.isOpen()") is True
    assert await page.locator("dialog.billfold-modal").count() == 1
    assert await _events(page, "action") == []
    assert await _events(page, "close") == []
    # The other direction: the portal acts on no message from its parent at all.
    frame = await _modal_frame(page)
    url = frame.url
    await frame.evaluate("window.got = 0; addEventListener('message', () => { window.got += 1 })")
    await page.evaluate(
        "for (const m of [{type: 'billfold:escape'}, {type: 'navigate', url: '/p/'}])"
        " document.querySelector('dialog.billfold-modal iframe').contentWindow"
        ".postMessage(m, '*')"
    )
    await frame.wait_for_function("window.got >= 2")  # delivered, and nothing happened
    await frame.get_by_label("Email address").wait_for()
    assert frame.url == url
    assert await page.evaluate("Billfold.isOpen()") is True
    # The same Escape from the modal's own frame does close it (the control).
    await frame.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    await page.locator("dialog.billfold-modal").wait_for(state="detached")


async def test_an_origin_the_site_does_not_allow_gets_no_portal_and_no_messages(
    dropin: DropIn, db_pool: asyncpg.Pool, context: BrowserContext
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=[dropin.tenant])
    page = await _open_page(context, dropin.page_url(tenant, dropin.other))
    await page.get_by_role("button", name="Billing").click()
    frame = await _modal_frame(page)
    await page.wait_for_function("document.readyState === 'complete'")
    # The sign-in page refuses this parent (CSP frame-ancestors): Chromium shows its
    # own error page, so the portal's form never appears and nothing is posted.
    await frame.wait_for_load_state()
    assert await frame.get_by_label("Email address").count() == 0
    assert await page.evaluate("window.rawMessages") == []
    assert await _events(page, "ready") == []


@pytest_asyncio.fixture
async def billing_dropin(bf_settings: Settings, billing: Billing) -> AsyncIterator[DropIn]:
    """portal-web calling the real billing-sync (fake Stripe), and the example page."""
    port = free_port()
    settings = bf_settings.model_copy(
        update={"portal_base_url": f"http://127.0.0.1:{port}", "rpc_timeout": 3.0}
    )
    runner = await serve(create_portal(settings, rpc_queue=billing.queue), port)
    try:
        async with tenant_pages(f"http://127.0.0.1:{port}") as (tenant, other):
            yield DropIn(f"http://127.0.0.1:{port}", tenant, other)
    finally:
        await runner.cleanup()


async def test_a_session_link_opens_the_portal_and_an_action_is_reported(
    billing_dropin: DropIn,
    api: Client,
    billing: Billing,
    db_pool: asyncpg.Pool,
    context: BrowserContext,
    eventually: Eventually,
) -> None:
    live = billing_dropin
    await db_pool.execute(
        "UPDATE portal.sites SET frame_ancestors = $2 WHERE id = $1",
        billing.tenant.site_id,
        [live.tenant],
    )
    await billing.customer(eventually, subscription={})
    created = await create_link(api, billing.tenant)
    page = await _open_page(context, live.page_url(billing.tenant))
    await page.evaluate("url => Billfold.open({url})", f"{live.portal}/r/{created['token']}")
    frame = await _modal_frame(page)
    # Straight into the portal (no sign-in), in the frame's path-token flow.
    await frame.get_by_role("heading", name="Plan", level=1).wait_for()
    assert "/e/bfs_" in frame.url
    await frame.get_by_role("link", name="Cancel Pro plan").click()
    await frame.get_by_role("button", name="Cancel plan").click()
    await frame.get_by_text("Your plan is cancelled").wait_for()
    await page.wait_for_function("window.billfoldEvents.some(e => e[0] === 'action')")
    # The action's name and nothing else: no ids, amounts or tokens.
    assert await _events(page, "action") == [{"action": "subscription.cancel"}]
    assert await _events(page, "ready") == [{}]
    await page.get_by_role("button", name="Close").click()
    await page.locator("dialog.billfold-modal").wait_for(state="detached")
    assert await _events(page, "close") == [{}]


async def test_axe_on_the_modal_and_the_framed_sign_in(
    dropin: DropIn, db_pool: asyncpg.Pool, browser: Browser
) -> None:
    assert dropin.sink is not None
    tenant = await make_tenant(db_pool, frame_ancestors=[dropin.tenant], primary_color="#ffcc00")
    await add_customer(db_pool, tenant.site_id, "ada@example.com", "Second Co")
    axe = Axe()
    for width in (1280, 360):
        context = await browser.new_context(viewport={"width": width, "height": 800})
        try:
            page = await _open_page(context, dropin.page_url(tenant))
            await page.get_by_role("button", name="Billing").click()
            frame = await _modal_frame(page)
            await frame.get_by_label("Email address").wait_for()
            # The tenant page with the modal open (the frame is checked on its own).
            results = await axe.run(page, options={"iframes": False})
            bad = [
                (v["id"], [n["html"] for n in v["nodes"]][:3])
                for v in results.response["violations"]
                if v.get("impact") in ("serious", "critical")
            ]
            assert not bad, (width, bad)
            await _check(axe, frame, "framed sign-in", width)  # type: ignore[arg-type]
            if width == 1280:
                await frame.get_by_label("Email address").fill("ada@example.com")
                await frame.get_by_role("button", name="Email me a code").click()
                await frame.get_by_role("heading", name="Enter your code").wait_for()
                await _check(axe, frame, "framed code", width)  # type: ignore[arg-type]
                code = await emailed_code(dropin.sink, "ada@example.com", tenant)
                await frame.get_by_label("6-digit code").fill(code)
                await frame.get_by_role("button", name="Sign in").click()
                await frame.get_by_role("heading", name="Choose an account").wait_for()
                await _check(axe, frame, "framed chooser", width)  # type: ignore[arg-type]
        finally:
            await context.close()


async def test_a_custom_domain_in_a_real_browser(
    sign_in_live: SignInLive, db_pool: asyncpg.Pool, browser: Browser
) -> None:
    tenant = await make_tenant(db_pool)
    host = f"billing-{secrets.token_hex(4)}.example.test"
    async with db_pool.acquire() as conn:
        await sites.add_domain(conn, tenant.site_id, host)
    port = urlsplit(sign_in_live.base).port
    custom = f"http://{host}:{port}"
    # In production a custom domain is https (the ingress's TLS). Over plain http a
    # browser sends no Sec-Fetch-Site, and our no-referrer policy makes its Origin
    # "null", so our forms would refuse the POSTs: treat this origin as secure, as
    # https would be.
    own = await browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, HOST_RULES, f"--unsafely-treat-insecure-origin-as-secure={custom}"],
    )
    try:
        context = await own.new_context()
        await _custom_domain(sign_in_live, tenant, host, context)
    finally:
        await own.close()


async def _custom_domain(
    sign_in_live: SignInLive, tenant: Tenant, host: str, context: BrowserContext
) -> None:
    port = urlsplit(sign_in_live.base).port
    custom = f"http://{host}:{port}"
    page = await context.new_page()
    await page.goto(f"{custom}/")
    await page.wait_for_url(f"{custom}/s/{tenant.slug}")  # "/" is the site's sign-in
    await page.get_by_label("Email address").fill("ada@example.com")
    await page.get_by_role("button", name="Email me a code").click()
    await page.get_by_role("heading", name="Enter your code").wait_for()
    code = await emailed_code(sign_in_live.sink, "ada@example.com", tenant)
    await page.get_by_label("6-digit code").fill(code)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{custom}/p/plan")
    await page.get_by_role("heading", name="Plan", level=1).wait_for()
    # The session cookie belongs to that host alone.
    cookies = [c for c in await context.cookies() if c["name"].startswith("bf_")]
    assert cookies
    assert {c["domain"] for c in cookies} == {host}
    other = await context.new_page()
    resp = await other.goto(f"{sign_in_live.base}/p/plan")
    assert resp is not None
    assert resp.status == 401  # the portal's own host: no session
    # A host nobody registered: refused.
    unknown = await other.goto(f"http://nobody-{secrets.token_hex(4)}.example.test:{port}/")
    assert unknown is not None
    assert unknown.status == 421
    await other.get_by_text("No billing portal here").wait_for()
