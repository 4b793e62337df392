"""Sign-in inside a frame (the drop-in script) over HTTP: a code asked for in a frame
works only in a frame and ends in the framed portal with no cookie; a top-level code
never works in a frame; the framed chooser's token works only in a frame's path; the
sign-in page is frameable only by the site's frame_ancestors; a publishable key names
the site; the script itself is served for other sites' pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest_asyncio

from billfold import tokens
from billfold.settings import Settings
from billfold_testing.infra import Slice
from session_api.keys import repository as keys

from .conftest import Client, make_tenant, texts
from .signin_helpers import (
    SAME_ORIGIN,
    CodeWatch,
    add_customer,
    ask_code,
    portal_with,
    send_code,
    watching_codes,
)

Factory = Callable[..., Any]
# What Chromium sends for a form posted inside an iframe, and at top level.
IN_FRAME = {**SAME_ORIGIN, "Sec-Fetch-Dest": "iframe"}
TOP = {**SAME_ORIGIN, "Sec-Fetch-Dest": "document"}
PARENT = "https://app.acme.example"


@pytest_asyncio.fixture
async def codes(bf_settings: Settings) -> AsyncIterator[CodeWatch]:
    async with watching_codes(bf_settings) as watch:
        yield watch


async def _post_code(portal: Client, slug: str, request_id: str, code: str, headers: Any) -> Any:
    return await portal.post(
        f"/s/{slug}/code",
        data={"r": request_id, "code": code},
        headers=headers,
        allow_redirects=False,
    )


async def test_a_framed_code_works_only_in_a_frame_and_opens_the_framed_portal(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=[PARENT])
    portal = await portal_with(aiohttp_client, bf_settings)
    page = await portal.get(f"/s/{tenant.slug}", headers={"Sec-Fetch-Dest": "iframe"})
    # Frameable by the site's own origins only.
    assert f"frame-ancestors {PARENT}" in page.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in page.headers
    assert f'name="billfold-parents" content="{PARENT}"' in await page.text()

    request_id = await ask_code(portal, tenant, "ada@example.com", frame="1")
    embedded = await db_pool.fetchval(
        "SELECT embedded FROM web.login_requests WHERE id = $1", request_id
    )
    assert embedded is True  # our script's flag stands in for a missing Sec-Fetch-Dest
    code = await codes.code(request_id, bf_slice.notifier_private_key)

    # At top level (a leaked request id, the right code): refused, and no try counted.
    top = await _post_code(portal, tenant.slug, request_id, code, TOP)
    assert top.status == 400
    assert "can no longer be used" in texts(await top.text())
    assert (
        await db_pool.fetchval("SELECT attempts FROM web.login_requests WHERE id = $1", request_id)
        == 0
    )

    framed = await _post_code(portal, tenant.slug, request_id, code, IN_FRAME)
    assert framed.status == 303, await framed.text()
    location = framed.headers["Location"]
    assert re.fullmatch(r"/e/bfs_[A-Za-z0-9_-]+/", location), location
    assert "Set-Cookie" not in framed.headers  # nothing a blocked cookie could break
    session = await db_pool.fetchrow(
        "SELECT embedded, sign_in_id FROM web.browser_sessions WHERE site_id = $1",
        tenant.site_id,
    )
    assert session["embedded"] is True
    assert session["sign_in_id"] is not None
    plan = await portal.get(location + "plan", headers={"Sec-Fetch-Dest": "iframe"})
    assert plan.status == 200
    # One account for this email: nothing to switch to.
    assert "Switch account" not in texts(await plan.text())
    switch = await portal.get(location + "accounts", headers={"Sec-Fetch-Dest": "iframe"})
    assert switch.status == 404
    # The framed portal's URL opened as a top-level page is refused.
    assert (
        await portal.get(location + "plan", headers={"Sec-Fetch-Dest": "document"})
    ).status == 401


async def test_a_top_level_code_never_works_in_a_frame(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=[PARENT])
    portal = await portal_with(aiohttp_client, bf_settings)
    request_id = await ask_code(portal, tenant, "ada@example.com")
    code = await codes.code(request_id, bf_slice.notifier_private_key)
    framed = await _post_code(portal, tenant.slug, request_id, code, IN_FRAME)
    assert framed.status == 400
    ok = await send_code(portal, tenant, request_id, code)
    assert ok.status == 303
    assert ok.headers["Location"] == "/p/"


async def test_the_framed_chooser_lives_in_the_path_only(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool, frame_ancestors=[PARENT])
    second = await add_customer(db_pool, tenant.site_id, "ada@example.com", "Second Co")
    portal = await portal_with(aiohttp_client, bf_settings)
    request_id = await ask_code(portal, tenant, "ada@example.com", frame="1")
    code = await codes.code(request_id, bf_slice.notifier_private_key)
    resp = await _post_code(portal, tenant.slug, request_id, code, IN_FRAME)
    assert resp.status == 303
    chooser = resp.headers["Location"]
    match = re.fullmatch(rf"/s/{tenant.slug}/e/(bfi_[A-Za-z0-9_-]+)/accounts", chooser)
    assert match, chooser
    assert "Set-Cookie" not in resp.headers
    page = await portal.get(chooser, headers={"Sec-Fetch-Dest": "iframe"})
    assert page.status == 200
    assert "Second Co" in texts(await page.text())
    # Opened at top level, or the token used as the chooser's cookie: refused.
    assert (await portal.get(chooser, headers={"Sec-Fetch-Dest": "document"})).status == 401
    portal.session.cookie_jar.update_cookies({"bf_signin": match.group(1)})
    as_cookie = await portal.get(f"/s/{tenant.slug}/accounts", allow_redirects=False)
    assert as_cookie.status == 303
    assert as_cookie.headers["Location"] == f"/s/{tenant.slug}"
    portal.session.cookie_jar.clear()

    chosen = await portal.post(
        chooser, data={"customer": second}, headers=IN_FRAME, allow_redirects=False
    )
    assert chosen.status == 303
    assert chosen.headers["Location"].startswith("/e/bfs_")
    assert "Set-Cookie" not in chosen.headers
    framed = chosen.headers["Location"]
    profile = await portal.get(framed + "profile", headers={"Sec-Fetch-Dest": "iframe"})
    html = await profile.text()
    assert "Second Co" in texts(html)

    # Switching inside the frame, without a new code: the session's own path.
    assert f'href="{framed}accounts"' in html
    listed = await portal.get(framed + "accounts", headers={"Sec-Fetch-Dest": "iframe"})
    assert listed.status == 200
    assert "Ada Lovelace" in texts(await listed.text())
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', await listed.text())
    assert csrf
    first = tenant.customer_ids[0]
    no_csrf = await portal.post(
        framed + "accounts", data={"customer": first}, headers=IN_FRAME, allow_redirects=False
    )
    assert no_csrf.status == 403
    switched = await portal.post(
        framed + "accounts",
        data={"customer": first, "csrf": csrf.group(1)},
        headers=IN_FRAME,
        allow_redirects=False,
    )
    assert switched.status == 303
    now = switched.headers["Location"]
    assert now.startswith("/e/bfs_")
    assert now != framed
    assert "Set-Cookie" not in switched.headers
    again = await portal.get(now + "profile", headers={"Sec-Fetch-Dest": "iframe"})
    assert "Ada Lovelace" in texts(await again.text())
    # The switched-from session ended with the switch.
    old = await portal.get(framed + "profile", headers={"Sec-Fetch-Dest": "iframe"})
    assert old.status == 401


async def test_a_publishable_key_names_the_site(
    aiohttp_client: Factory, bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    async with db_pool.acquire() as conn:
        _, key = await keys.create(conn, tenant.site_id, "publishable")
        _, secret = await keys.create(conn, tenant.site_id, "secret")
    portal = await portal_with(aiohttp_client, bf_settings)
    resp = await portal.get(f"/s/{key}?next=invoices", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"/s/{tenant.slug}?next=invoices"
    # A secret key, an unknown or revoked publishable key: not found, nothing said.
    await db_pool.execute(
        "UPDATE portal.api_keys SET revoked_at = now() WHERE key_hash = $1",
        tokens.hash_token(key),
    )
    for ref in (key, secret, tokens.generate_key("publishable")):
        assert (await portal.get(f"/s/{ref}", allow_redirects=False)).status == 404


async def test_the_script_is_served_for_other_sites_pages(portal: Client) -> None:
    resp = await portal.get("/js/v1/billfold.js", headers={"Origin": PARENT})
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    body = await resp.text()
    assert "window.Billfold" in body
    assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Cache-Control"] == "public, max-age=86400, stale-while-revalidate=604800"
    etag = resp.headers["ETag"]
    again = await portal.get("/js/v1/billfold.js", headers={"If-None-Match": etag})
    assert again.status == 304
    # Our pages stay same-origin resources.
    page = await portal.get("/static/portal.js")
    assert page.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    # No third-party host in it: it talks to the origin it came from.
    hosts = set(re.findall(r"https?://[A-Za-z0-9.-]+", body))
    assert hosts <= {"https://PORTAL"}, hosts
