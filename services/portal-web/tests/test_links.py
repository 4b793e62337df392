"""The link: GET never consumes, POST consumes once, dead links get clear pages."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from .conftest import Client, Tenant, create_link, enter, link_path, texts


async def _uses(pool: asyncpg.Pool, session_id: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM web.link_uses WHERE portal_session_id = $1", session_id
        )
    )


async def test_get_shows_continue_page_and_consumes_nothing(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    created = await create_link(api, tenant)
    for _ in range(3):  # a mail scanner, an unfurler, the customer
        resp = await portal.get(link_path(created))
        html = await resp.text()
        assert resp.status == 200
        assert f"Continue to your billing portal for {tenant.name}" in texts(html)
        assert 'method="post"' in html
        assert "bf_session" not in resp.headers.getall("Set-Cookie", [""])[0]
    assert await _uses(db_pool, created["id"]) == 0
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.browser_sessions WHERE portal_session_id = $1", created["id"]
        )
        == 0
    )
    # The page says nothing about whose link it is.
    assert "Ada" not in html
    assert "ada@example.com" not in html


async def test_post_consumes_and_lands_in_portal(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    created = await create_link(api, tenant)
    resp = await portal.post(link_path(created), allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/p/"
    cookie = resp.cookies["bf_session"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert not cookie["secure"]  # the test's base URL is plain-http localhost
    assert cookie.value.startswith("bfs_")
    assert await _uses(db_pool, created["id"]) == 1
    resp = await portal.get("/p/")
    assert resp.status == 200
    assert str(resp.url).endswith("/p/plan")


async def test_second_use_is_already_used_410(api: Client, portal: Client, tenant: Tenant) -> None:
    created = await create_link(api, tenant, return_url="https://app.example.com/billing")
    await enter(portal, created)
    for method in ("GET", "POST"):
        resp = await portal.request(method, link_path(created), allow_redirects=False)
        html = await resp.text()
        assert resp.status == 410
        assert "This link has already been used" in texts(html)
        assert 'href="https://app.example.com/billing"' in html  # the way back
        assert "Ada" not in html
        assert "ada@example.com" not in html


async def test_fifty_concurrent_posts_one_winner(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    created = await create_link(api, tenant)

    async def attempt() -> int:
        resp = await portal.post(link_path(created), allow_redirects=False)
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sorted(statuses).count(303) == 1, statuses
    assert statuses.count(410) == 49
    assert await _uses(db_pool, created["id"]) == 1
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.browser_sessions WHERE portal_session_id = $1", created["id"]
        )
        == 1
    )


async def test_unknown_link_is_404_without_details(portal: Client) -> None:
    for token in ("bfl_" + "x" * 43, "nonsense", "bfl_%3Cscript%3E"):
        resp = await portal.get(f"/r/{token}")
        html = await resp.text()
        assert resp.status == 404
        assert "This link doesn't work" in texts(html)
        assert "Ask the service that sent you the link for a new one." in texts(html)


async def test_expired_and_revoked_are_410_with_way_back(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    expired = await create_link(api, tenant, return_url="https://app.example.com/x")
    await db_pool.execute(
        "UPDATE portal.portal_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 hour' WHERE id = $1",
        expired["id"],
    )
    revoked = await create_link(api, tenant)  # no return URL: the support email
    resp = await api.delete(f"/v1/portal_sessions/{revoked['id']}", headers=tenant.auth)
    assert resp.status == 204
    cases: list[tuple[dict[str, Any], str, str]] = [
        (expired, "This link has expired", 'href="https://app.example.com/x"'),
        (revoked, "This link is no longer valid", 'href="mailto:help@example.com"'),
    ]
    for created, words, way_back in cases:
        for method in ("GET", "POST"):
            resp = await portal.request(method, link_path(created), allow_redirects=False)
            html = await resp.text()
            assert resp.status == 410, (created["id"], method)
            assert words in texts(html)
            assert way_back in html
            assert "Ada" not in html
            assert "ada@example.com" not in html
            assert "Set-Cookie" not in resp.headers or "bfs_" not in resp.headers["Set-Cookie"]
        assert await _uses(db_pool, created["id"]) == 0


async def test_multi_use_link_goes_straight_in(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    created = await create_link(api, tenant, single_use=False)
    for _ in range(2):
        portal.session.cookie_jar.clear()
        resp = await portal.get(link_path(created), allow_redirects=False)
        assert resp.status == 303
        assert resp.cookies["bf_session"].value.startswith("bfs_")
    row = await db_pool.fetchrow(
        "SELECT uses FROM web.link_uses WHERE portal_session_id = $1", created["id"]
    )
    assert row is not None
    assert row["uses"] == 2


async def test_cross_site_post_is_refused(api: Client, portal: Client, tenant: Tenant) -> None:
    created = await create_link(api, tenant)
    resp = await portal.post(
        link_path(created), headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False
    )
    assert resp.status == 403
    resp = await portal.post(
        link_path(created), headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert resp.status == 403
    await enter(portal, created)  # still unused


async def test_head_never_uses_a_link(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    multi = await create_link(api, tenant, single_use=False)
    resp = await portal.head(link_path(multi), allow_redirects=False)
    assert resp.status == 200
    assert await _uses(db_pool, multi["id"]) == 0
