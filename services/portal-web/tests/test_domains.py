"""Custom domains through the Host header: a site's domain serves its sign-in at ``/``
and its own links and sessions only; unknown hosts are refused; links minted for the
site carry its domain; cookies stay on the host that set them."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from session_api.sites import repository as sites

from .conftest import Client, Tenant, create_link, make_tenant, texts


async def _domain(db_pool: asyncpg.Pool, tenant: Tenant) -> str:
    host = f"billing-{secrets.token_hex(4)}.acme.test"
    async with db_pool.acquire() as conn:
        await sites.add_domain(conn, tenant.site_id, host)
    return host


async def test_custom_domain_serves_its_site_only(
    portal: Client, api: Client, tenant: Tenant, db_pool: asyncpg.Pool
) -> None:
    host = await _domain(db_pool, tenant)
    on = {"Host": host}
    home = await portal.get("/", headers=on, allow_redirects=False)
    assert home.status == 303
    assert home.headers["Location"] == f"/s/{tenant.slug}"
    sign_in = await portal.get(f"/s/{tenant.slug}", headers=on)
    assert sign_in.status == 200
    assert "Sign in to your billing portal" in texts(await sign_in.text())
    assert "frame-ancestors 'none'" in sign_in.headers["Content-Security-Policy"]

    # Links minted for the site now carry its domain (same scheme as the portal's).
    created = await create_link(api, tenant)
    assert created["url"] == f"http://{host}/r/{created['token']}"
    page = await portal.get(f"/r/{created['token']}", headers=on)
    assert page.status == 200
    entered = await portal.post(f"/r/{created['token']}", headers=on, allow_redirects=False)
    assert entered.status == 303
    cookie = entered.headers["Set-Cookie"]
    assert "Domain" not in cookie  # host-only: never shared with other hosts
    plan = await portal.get("/p/plan", headers=on)
    assert plan.status == 200

    # Another site's pages are "not found" on this domain, as if they did not exist.
    other = await make_tenant(db_pool)
    assert (await portal.get(f"/s/{other.slug}", headers=on)).status == 404
    their_link = await create_link(api, other)
    assert (await portal.get(f"/r/{their_link['token']}", headers=on)).status == 404
    portal.session.cookie_jar.clear()
    await portal.post(f"/r/{their_link['token']}", allow_redirects=False)  # own host
    assert (await portal.get("/p/plan", headers=on)).status == 404


async def test_unknown_hosts_are_refused(portal: Client, tenant: Tenant) -> None:
    for host in ("evil.example", "billing.acme.test.evil.example", "10.0.0.7:8081"):
        resp = await portal.get(f"/s/{tenant.slug}", headers={"Host": host})
        assert resp.status == 421, host
        assert "No billing portal here" in texts(await resp.text())
        de = await portal.get("/", headers={"Host": host, "Accept-Language": "de"})
        assert "Hier gibt es kein Abrechnungsportal" in texts(await de.text())
    # Probes use the pod's address: health answers on any host.
    health: Any = await portal.get("/healthz", headers={"Host": "10.0.0.7:8081"})
    assert health.status == 200
    # The portal's own host and loopback names work.
    for host in ("127.0.0.1:8081", "localhost:8081", "[::1]:8081"):
        assert (await portal.get(f"/s/{tenant.slug}", headers={"Host": host})).status == 200
