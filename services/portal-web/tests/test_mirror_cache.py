"""The mirror cache (``portal_web.mirror_cache``): mirror reads served from memory while
billing-sync's triggers (``mirror_0007_change_notify``) say the customer's rows did not
change. Real Postgres, real triggers, the real listener connection.

Writes that must notify nobody use ``session_replication_role = replica`` (Postgres then
fires no ordinary trigger): what a notification lost during an outage looks like.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import asyncpg

from billfold.settings import Settings
from billfold_testing.waiting import Eventually
from portal_web import mirror
from portal_web.mirror_cache import CHANNEL, MIRROR_CACHE, MirrorCache

from .billing import Billing, portal_for
from .conftest import Client, Tenant, add_subscription, create_link, enter, texts

PRO = [{"product": "Pro", "unit_amount": 4900}]
CANCELLING = "Your plan stays active until March 1, 2027, then it ends."


async def _listening(portal: Client, eventually: Eventually) -> MirrorCache:
    cache = portal.app[MIRROR_CACHE]
    await eventually(lambda: cache.listening, timeout=10)
    return cache


async def _plan(portal: Client) -> str:
    resp = await portal.get("/p/plan")
    assert resp.status == 200
    return texts(await resp.text())


async def _cached_plan(portal: Client, cache: MirrorCache) -> str:
    """The Plan page, twice: the second view must come from the cache."""
    first = await _plan(portal)
    hits = cache.hits
    assert await _plan(portal) == first
    assert cache.hits == hits + 1
    return first


async def _silently(db_pool: asyncpg.Pool, sql: str, *args: Any) -> None:
    """``sql`` with the triggers off: no notification."""
    async with db_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


async def test_a_mirror_change_by_direct_sql_shows_within_moments(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool, eventually: Eventually
) -> None:
    """Every mirror table the Plan page reads notifies: the subscription, its items, and
    a new subscription; each shows on a page within moments of the commit."""
    sub = await add_subscription(db_pool, tenant, items=PRO)
    cache = await _listening(portal, eventually)
    await enter(portal, await create_link(api, tenant, locale="en"))
    assert CANCELLING not in await _cached_plan(portal, cache)

    await db_pool.execute(
        "UPDATE mirror.subscriptions SET cancel_at_period_end = true WHERE stripe_id = $1", sub
    )
    await eventually(lambda: _shows(portal, CANCELLING), timeout=5)

    await _cached_plan(portal, cache)
    await db_pool.execute(
        "UPDATE mirror.subscription_items SET quantity = 7, price_model = 'per_unit' "
        "WHERE subscription_id = $1",
        sub,
    )
    await eventually(lambda: _shows(portal, "7 seats × $49.00 / month"), timeout=5)  # noqa: RUF001

    await _cached_plan(portal, cache)
    await add_subscription(db_pool, tenant, items=[{"product": "Team Add-on", "unit_amount": 100}])
    await eventually(lambda: _shows(portal, "Team Add-on"), timeout=5)


async def _shows(portal: Client, text: str) -> bool:
    return text in await _plan(portal)


async def test_without_a_notification_the_entry_is_served_until_the_ttl(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool, eventually: Eventually
) -> None:
    """The notification is what refreshes a cached page: a write that notifies nobody
    stays unseen (this is what the trigger prevents) until the TTL, the safety net."""
    sub = await add_subscription(db_pool, tenant, items=PRO)
    cache = await _listening(portal, eventually)
    await enter(portal, await create_link(api, tenant, locale="en"))
    before = await _cached_plan(portal, cache)
    await _silently(
        db_pool,
        "UPDATE mirror.subscriptions SET cancel_at_period_end = true WHERE stripe_id = $1",
        sub,
    )
    for _ in range(3):
        assert await _plan(portal) == before
    cache.ttl = 0.0
    assert CANCELLING in await _plan(portal)


async def test_listener_killed_pages_stay_correct_and_the_cache_starts_afresh(
    api: Client, portal: Client, tenant: Tenant, db_pool: asyncpg.Pool, eventually: Eventually
) -> None:
    """The listener's connection terminated: notifications sent meanwhile are lost. Until
    it is back every read goes to Postgres; when it is back, nothing cached before is
    served."""
    sub = await add_subscription(db_pool, tenant, items=PRO)
    cache = await _listening(portal, eventually)
    await enter(portal, await create_link(api, tenant, locale="en"))
    await _cached_plan(portal, cache)
    pid, reconnects = cache.listener_pid, cache.reconnects
    assert await db_pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    await eventually(lambda: cache.listener_pid != pid, timeout=10)
    # Lost or back: either way this silent change must show on the very next page.
    await _silently(
        db_pool,
        "UPDATE mirror.subscriptions SET cancel_at_period_end = true WHERE stripe_id = $1",
        sub,
    )
    assert CANCELLING in await _plan(portal)
    await eventually(lambda: cache.listening and cache.reconnects == reconnects + 1, timeout=10)
    assert cache.listener_pid not in (None, pid)
    # Back: cached again, and notified again.
    assert CANCELLING in await _cached_plan(portal, cache)
    await db_pool.execute(
        "UPDATE mirror.subscriptions SET cancel_at_period_end = false WHERE stripe_id = $1", sub
    )
    await eventually(lambda: _not_shows(portal, CANCELLING), timeout=5)


async def _not_shows(portal: Client, text: str) -> bool:
    return text not in await _plan(portal)


async def test_a_notification_during_the_read_invalidates_what_it_read(
    portal: Client, tenant: Tenant, db_pool: asyncpg.Pool, eventually: Eventually
) -> None:
    """The read began before a change and returned the old rows; the change's
    notification came in while it ran. Those rows must not be served afterwards: the
    entry carries the generation taken before the query."""
    sub = await add_subscription(db_pool, tenant, items=PRO)
    cache = await _listening(portal, eventually)
    site, customer = tenant.site_id, tenant.customer_ids[0]
    calls = 0

    async def load() -> mirror.SubscriptionRows:
        nonlocal calls
        calls += 1
        rows = await mirror.subscription_rows(db_pool, site, customer)
        if calls == 1:  # the change commits, and is notified, while this read runs
            generation = cache.generation(site, customer)
            await db_pool.execute(
                "UPDATE mirror.subscriptions SET cancel_at_period_end = true WHERE stripe_id = $1",
                sub,
            )
            await eventually(lambda: cache.generation(site, customer) != generation, timeout=5)
        return rows

    first = await cache.read(site, customer, "subscriptions", load)
    assert first[0]["cancel_at_period_end"] is False
    second = await cache.read(site, customer, "subscriptions", load)
    assert calls == 2
    assert second[0]["cancel_at_period_end"] is True
    assert await cache.read(site, customer, "subscriptions", load) == second
    assert calls == 2  # and now it is cached


async def test_a_cache_whose_listener_is_not_connected_always_reads() -> None:
    cache = MirrorCache()  # never started: no LISTEN, so no entry may be trusted
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert not cache.listening
    assert [await cache.read("s", "c", "q", load) for _ in range(3)] == [1, 2, 3]


async def test_the_page_after_an_action_is_read_afresh_without_the_notification(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    eventually: Eventually,
) -> None:
    """billing-sync writes the mirror before it answers; the trigger's notification may
    come a moment after the redirect's GET. The action itself marks the customer
    changed, so post/redirect/get never shows the page from before the action: here the
    cache hears no notification at all."""
    customer = await billing.customer(eventually, subscription={})
    assert customer.subscription is not None
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    cache = await _listening(portal, eventually)
    await enter(portal, await create_link(api, billing.tenant, locale="en"))
    await _cached_plan(portal, cache)
    assert cache._conn is not None
    await cache._conn.remove_listener(CHANNEL, cache._on_notify)  # deaf, still connected
    page = await portal.get(f"/p/plan/{customer.subscription}/cancel")
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', await page.text())
    assert found is not None
    csrf = found.group(1)
    resp = await portal.post(
        f"/p/plan/{customer.subscription}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    shown = texts(await (await portal.get(resp.headers["Location"])).text())
    assert "Your plan is cancelled" in shown  # the flash, from the query string
    assert "Resume plan" in shown  # the rows: read after the action, not from the cache
