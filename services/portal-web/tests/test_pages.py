"""Plan and Invoices: what they say, in which language, for whom; sections enforced;
security headers; every output escaped."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from billfold_testing.waiting import Eventually
from portal_web.pages import PAGE_MEMO
from portal_web.state import SITES

from .conftest import (
    Client,
    Tenant,
    add_invoice,
    add_subscription,
    create_link,
    enter,
    make_tenant,
    texts,
)


async def test_plan_shows_flat_seats_tiers_status_and_next_charge(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    await add_subscription(db_pool, tenant, items=[{"product": "Pro", "unit_amount": 4900}])
    await add_subscription(
        db_pool,
        tenant,
        items=[{"product": "Team", "model": "per_unit", "unit_amount": 1200, "quantity": 5}],
        cancel_at_period_end=True,
    )
    tiers = [
        {"up_to": 10, "unit_amount": 500, "flat_amount": None},
        {"up_to": None, "unit_amount": 400, "flat_amount": None},
    ]
    await add_subscription(
        db_pool,
        tenant,
        status="past_due",
        items=[{"product": "API", "model": "graduated", "tiers": tiers, "interval": "year"}],
    )
    await enter(portal, await create_link(api, tenant, locale="en"))
    resp = await portal.get("/p/plan")
    page = texts(await resp.text())
    assert resp.status == 200
    assert "Pro Active" in page
    assert "$49.00 / month" in page
    assert "5 seats × $12.00 / month" in page  # noqa: RUF001
    assert "Cancels Mar 1, 2027" in page
    assert "Your plan stays active until March 1, 2027, then it ends." in page
    assert "Past due" in page
    assert "Tiered price, per year" in page
    assert "1 to 10 $5.00 per unit" in page
    assert "11 and above $4.00 per unit" in page
    assert "February 1, 2027 to March 1, 2027" in page
    assert "$49.00 on March 1, 2027" in page


async def test_plan_in_german_and_jpy(api: Client, portal: Client, db_pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(db_pool)
    await add_subscription(
        db_pool,
        tenant,
        currency="jpy",
        items=[{"product": "Standard", "unit_amount": 1200}],
        next_charge=("2027-03-01", 1200),
    )
    await add_invoice(db_pool, tenant, number="INV-1", total=123400, currency="eur")
    await enter(portal, await create_link(api, tenant, locale="de"))
    page = texts(await (await portal.get("/p/plan")).text())
    assert "Tarif" in page
    assert "Aktiv" in page
    assert "1.200 ¥ / Monat" in page  # no decimals for JPY
    assert "1.200 ¥ am 1. März 2027" in page
    page = texts(await (await portal.get("/p/invoices")).text())
    assert "1.234,00 €" in page
    assert "Bezahlt" in page


async def test_jpy_in_english_from_accept_language(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    await add_invoice(db_pool, tenant, number="JP-1", total=1200, currency="jpy")
    await enter(portal, await create_link(api, tenant))  # no locale: the browser's
    page = texts(
        await (await portal.get("/p/invoices", headers={"Accept-Language": "en-US"})).text()
    )
    assert "¥1,200" in page
    assert "¥12.00" not in page
    page = texts(
        await (await portal.get("/p/invoices", headers={"Accept-Language": "fr, de;q=0.8"})).text()
    )
    assert "Rechnungen" in page
    assert "1.200 ¥" in page


async def test_invoices_statuses_links_and_paging(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    await add_invoice(db_pool, tenant, number="A-1", status="paid", created="2027-01-01")
    await add_invoice(
        db_pool, tenant, number="A-2", status="open", created="2027-01-02", due="2099-01-01"
    )
    await add_invoice(
        db_pool, tenant, number="A-3", status="open", created="2027-01-03", due="2020-01-01"
    )
    await add_invoice(db_pool, tenant, number="A-4", status="void", created="2027-01-04")
    await add_invoice(db_pool, tenant, number="DRAFT", status="draft", created="2027-01-05")
    for i in range(10):
        await add_invoice(db_pool, tenant, number=f"B-{i:02d}", created=f"2026-06-{i + 1:02d}")
    # Another customer of the same site, and another site: never shown.
    other = await make_tenant(db_pool)
    await add_invoice(db_pool, other, number="OTHER-SITE")
    await enter(portal, await create_link(api, tenant, locale="en"))
    html = await (await portal.get("/p/invoices")).text()
    page = texts(html)
    assert page.index("A-4") < page.index("A-3") < page.index("A-2") < page.index("A-1")
    assert "Paid" in page
    assert "Void" in page
    assert "Open" in page
    assert "Overdue by" in page
    assert "DRAFT" not in page
    assert "OTHER-SITE" not in page
    assert 'href="https://invoice.stripe.com/i/in_' in html
    assert 'href="https://pay.stripe.com/invoice/in_' in html
    assert page.count("B-") == 8  # 12 per page: 4 A's and 8 B's
    assert "Page 1 of 2" in page
    page2 = texts(await (await portal.get("/p/invoices?page=2")).text())
    assert page2.count("B-") == 2
    assert "A-1" not in page2
    assert (await portal.get("/p/invoices?page=3")).status == 404
    assert (await portal.get("/p/invoices?page=x")).status == 400


async def test_empty_states(api: Client, portal: Client, db_pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(db_pool)
    await enter(portal, await create_link(api, tenant))
    assert "You have no subscriptions." in texts(await (await portal.get("/p/plan")).text())
    assert "No invoices yet." in texts(await (await portal.get("/p/invoices")).text())


async def test_hidden_section_is_404_whatever_the_html(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    # Hidden by the session...
    tenant = await make_tenant(db_pool)
    created = await create_link(api, tenant, sections={"invoices": {"enabled": False}})
    await enter(portal, created)
    assert (await portal.get("/p/invoices")).status == 404
    html = await (await portal.get("/p/plan")).text()
    assert "/p/invoices" not in html
    # ...and by the site's default.
    hidden = await make_tenant(db_pool, default_sections={"subscriptions": {"enabled": False}})
    portal.session.cookie_jar.clear()
    await enter(portal, await create_link(api, hidden))
    assert (await portal.get("/p/plan")).status == 404
    resp = await portal.get("/p/", allow_redirects=False)
    assert resp.headers["Location"] == "/p/invoices"


async def test_security_headers_and_frame_ancestors(
    api: Client, portal: Client, db_pool: asyncpg.Pool
) -> None:
    framed = await make_tenant(db_pool, frame_ancestors=["https://app.example.com"])
    created = await create_link(api, framed)
    for resp in (await portal.get(f"/r/{created['token']}"), await portal.get("/r/bfl_nope")):
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Strict-Transport-Security" not in resp.headers  # plain http here
    ok = await portal.get(f"/r/{created['token']}")
    assert ok.headers["Content-Security-Policy"].endswith("frame-ancestors https://app.example.com")
    assert "X-Frame-Options" not in ok.headers
    unknown = await portal.get("/r/bfl_nope")
    assert unknown.headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
    assert unknown.headers["X-Frame-Options"] == "DENY"
    html = await ok.text()
    assert "<script>" not in html
    assert "style=" not in html
    assert "<style" not in html


async def test_hsts_and_secure_cookie_on_https(
    aiohttp_client: Any, bf_settings: Any, api: Client, db_pool: asyncpg.Pool
) -> None:
    from portal_web.app import create_app

    settings = bf_settings.model_copy(update={"portal_base_url": "https://billing.example.com"})
    portal: Client = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(db_pool)
    created = await create_link(api, tenant)
    resp = await portal.post(f"/r/{created['token']}", allow_redirects=False)
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = resp.cookies["__Host-bf_session"]
    assert cookie["secure"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"


async def test_everything_is_escaped(api: Client, portal: Client, db_pool: asyncpg.Pool) -> None:
    evil = "<script>alert(1)</script>"
    tenant = await make_tenant(db_pool, name=evil, customer_name=evil)
    await add_subscription(db_pool, tenant, items=[{"product": evil, "unit_amount": 100}])
    await add_invoice(db_pool, tenant, number=evil)
    created = await create_link(api, tenant, return_url="https://app.example.com/?a=1&c=2")
    for path in (f"/r/{created['token']}",):
        html = await (await portal.get(path)).text()
        assert evil not in html
        assert "&lt;script&gt;" in html
    await enter(portal, created)
    for path in ("/p/plan", "/p/invoices"):
        html = await (await portal.get(path)).text()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert '<script src="/static/portal.js" defer></script>' in html
        assert 'href="https://app.example.com/?a=1&amp;c=2"' in html


async def test_brand_css_keeps_contrast(portal: Client, db_pool: asyncpg.Pool) -> None:
    from portal_web import branding

    tenant = await make_tenant(db_pool, primary_color="#ffff00")  # yellow on white fails
    html = await (await portal.get("/r/bfl_x")).text()
    assert "/brand/" not in html  # unknown link: no site, no brand
    site = await portal.app[SITES].get(db_pool, tenant.site_id)
    assert site is not None
    resp = await portal.get(f"/brand/{site.id}/{branding.version(site)}.css")
    css = await resp.text()
    light = css.split("--brand:", 1)[1].split(";", 1)[0]
    rgb = branding.parse(light)
    assert rgb is not None
    assert branding.contrast(rgb, (255, 255, 255)) >= 4.5
    assert "prefers-color-scheme: dark" in css


async def test_memoized_plan_page_follows_the_mirror_and_the_session(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool, eventually: Eventually
) -> None:
    """The Plan page is memoized on its inputs (pages.PageMemo), the mirror rows among
    them: a memoized page is never staler than the rows it is served for. Those rows come
    from the mirror cache (mirror_cache), fresh within moments of a commit (the trigger's
    NOTIFY), so a change by direct SQL shows on a page within a bounded wait, never a
    stale page for good. Another session of the same customer gets its own page (its own
    CSRF token, nav)."""
    sub = await add_subscription(db_pool, tenant, items=[{"product": "Pro", "unit_amount": 4900}])
    await enter(portal, await create_link(api, tenant, locale="en"))
    memo = portal.app[PAGE_MEMO]
    first = await (await portal.get("/p/plan")).text()
    hits = memo.hits
    assert await (await portal.get("/p/plan")).text() == first
    assert memo.hits == hits + 1

    async def shows(text: str) -> bool:
        return text in texts(await (await portal.get("/p/plan")).text())

    await db_pool.execute(
        "UPDATE mirror.subscriptions SET cancel_at_period_end = true WHERE stripe_id = $1", sub
    )
    await eventually(
        lambda: shows("Your plan stays active until March 1, 2027, then it ends."), timeout=5
    )
    await db_pool.execute(
        "UPDATE mirror.subscription_items SET quantity = 7, price_model = 'per_unit' "
        "WHERE subscription_id = $1",
        sub,
    )
    await eventually(lambda: shows("7 seats × $49.00 / month"), timeout=5)  # noqa: RUF001
    # The same customer in German, in another session: its own page.
    portal.session.cookie_jar.clear()
    await enter(
        portal, await create_link(api, tenant, locale="de", sections={"usage": {"enabled": False}})
    )
    html = await (await portal.get("/p/plan")).text()
    assert "7 Plätze × 49,00 $ / Monat" in texts(html)  # noqa: RUF001
    assert 'href="/p/usage"' not in html
    assert first.split('name="csrf" value="')[1][:40] not in html


async def test_every_view_of_a_memoized_page_gets_fresh_call_ids(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    """A form's hidden call id makes a double submit one call (call_ids). The Plan page is
    memoized: if a memo hit served an earlier view's ids, a later deliberate action (resume,
    cancel, resume again, the rows back as they were) would be taken for a repeat."""
    await add_subscription(
        db_pool,
        tenant,
        items=[{"product": "Pro", "unit_amount": 4900}],
        cancel_at_period_end=True,  # a Resume form on the page
    )
    await enter(portal, await create_link(api, tenant, locale="en"))
    memo = portal.app[PAGE_MEMO]
    pattern = re.compile(r'name="call" value="([^"]+)"')
    first = pattern.findall(await (await portal.get("/p/plan")).text())
    hits = memo.hits
    second = pattern.findall(await (await portal.get("/p/plan")).text())
    assert memo.hits == hits + 1  # the second view came from the memo
    assert len(first) == len(second) == 1
    assert first != second
    assert all(re.fullmatch(r"call_[0-9a-f]{32}", v) for v in first + second)
