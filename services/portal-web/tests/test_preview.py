"""Read-only previews (``billfold portal preview``): the portal as the customer sees it,
a banner that says so, and every action refused server-side; in Chromium, axe-clean."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import BrowserContext

from billfold.settings import Settings
from portal_web import credentials
from session_api.portal_sessions import operator
from session_api.portal_sessions.schemas import CreatePortalSession
from session_api.sites import repository as sites

from .conftest import Client, Tenant, create_link, enter, make_tenant, texts
from .test_browser import Live, _check, live  # noqa: F401 - fixtures

BANNER = "Read-only preview: you see this portal as the customer does. Actions are turned off."
# Whatever the action (cancel, resume, set default, edit…): a POST under the prefix.
ACTIONS = ("/plan/cancel", "/payment-methods/default", "/profile", "/anything/at/all")


async def _preview_token(
    db_pool: asyncpg.Pool, redis_client: aioredis.Redis, settings: Settings, tenant: Tenant
) -> str:
    async with db_pool.acquire() as conn:
        site = await sites.get_by_slug(conn, tenant.slug)
        assert site is not None
        created = await operator.create(
            conn,
            redis_client,
            settings,
            site,
            CreatePortalSession(customer=tenant.customer_ids[0]),
            preview=True,
        )
    return str(created.body["token"])


async def test_preview_shows_banner_and_refuses_every_action(
    portal: Client,
    api: Client,
    tenant: Tenant,
    db_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    token = await _preview_token(db_pool, redis_client, bf_settings, tenant)
    resp = await portal.post(f"/r/{token}", allow_redirects=False)
    assert resp.status == 303
    page = await portal.get("/p/plan")
    assert BANNER in texts(await page.text())
    csrf = credentials.csrf_token(
        portal.session.cookie_jar.filter_cookies(portal.make_url("/"))[
            credentials.cookie_name(bf_settings)
        ].value
    )
    for path in ACTIONS:
        refused = await portal.post(f"/p{path}", data={"csrf": csrf})
        assert refused.status == 403, path
        assert "This is a read-only preview" in texts(await refused.text())
    # Twice: the second time from the cache entry, which must carry the flag too.
    again = await portal.post("/p/plan/cancel", data={"csrf": csrf})
    assert again.status == 403
    # Signing out is not an action on the customer's account.
    out = await portal.post("/p/sign-out", data={"csrf": csrf})
    assert out.status == 200

    # A customer's own session is not refused as a preview (no such route here: 404/405).
    portal.session.cookie_jar.clear()
    await enter(portal, await create_link(api, tenant))
    page = await portal.get("/p/plan")
    assert BANNER not in texts(await page.text())
    own = await portal.post("/p/plan/cancel", data={"csrf": "x"})
    assert "read-only preview" not in texts(await own.text())


async def test_preview_in_a_browser_is_marked_and_accessible(
    live: Live,  # noqa: F811
    db_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
    context: BrowserContext,
) -> None:
    tenant = await make_tenant(db_pool)
    token = await _preview_token(
        db_pool, redis_client, bf_settings.model_copy(update={"portal_base_url": live.base}), tenant
    )
    page = await context.new_page()
    await page.goto(f"{live.base}/r/{token}")
    await page.wait_for_url(f"{live.base}/p/plan")
    await page.get_by_text(BANNER).wait_for()
    await _check(Axe(), page, "preview", 1280)
    refused: Any = await page.request.post(
        f"{live.base}/p/plan/cancel", headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert refused.status == 403
    assert "This is a read-only preview" in await refused.text()


async def test_preview_refuses_the_json_api_writes_too(
    portal: Client,
    tenant: Tenant,
    db_pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    """The JSON API's writes are not POSTs under /p/ or /e/ (the preview middleware's
    ground): the action layer itself refuses a preview, whatever the front end."""
    token = await _preview_token(db_pool, redis_client, bf_settings, tenant)
    assert (await portal.post(f"/r/{token}", allow_redirects=False)).status == 303
    session = await portal.get("/api/portal/v1/session")
    assert session.status == 200
    headers = {"X-CSRF-Token": (await session.json())["csrf_token"]}
    for method, path, body in (
        ("PATCH", "/api/portal/v1/subscriptions/sub_any", {"cancel_at_period_end": True}),
        ("POST", "/api/portal/v1/payment-methods/setup-session", None),
    ):
        resp = await portal.request(method, path, json=body, headers=headers)
        refused = await resp.json()
        assert resp.status == 403, refused
        assert refused["error"]["code"] == "preview_read_only"
    count = await db_pool.fetchval(
        "SELECT count(*) FROM web.audit_log WHERE site_id = $1", tenant.site_id
    )
    assert count == 0  # refused before anything was attempted
