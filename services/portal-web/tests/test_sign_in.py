"""Email + code sign-in over HTTP: the code sent sealed, five tries, ten minutes, the
same answer and the same work for an unknown email, rate limits (and Redis down), the
site's sections and sign-in lifetime."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from billfold.sections import with_site_defaults
from billfold.settings import Settings, SettingsError
from billfold_testing.infra import Slice
from portal_web.sign_in_limits import Policy

from .conftest import create_link, make_tenant, texts
from .signin_helpers import (
    SAME_ORIGIN,
    CodeWatch,
    ask_code,
    other_code,
    portal_with,
    send_code,
    watching_codes,
)

Factory = Callable[..., Any]


@pytest_asyncio.fixture
async def codes(bf_settings: Settings) -> AsyncIterator[CodeWatch]:
    async with watching_codes(bf_settings) as watch:
        yield watch


async def test_code_signs_in_with_site_sections_and_lifetime(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool, default_sections={"invoices": {"enabled": False}})
    await db_pool.execute("UPDATE portal.sites SET sign_in_ttl = 900 WHERE id = $1", tenant.site_id)
    portal = await portal_with(aiohttp_client, bf_settings)
    page = await portal.get(f"/s/{tenant.slug}")
    assert page.status == 200
    assert "Sign in to your billing portal" in texts(await page.text())

    request_id = await ask_code(portal, tenant, "  ADA@example.com ")
    code = await codes.code(request_id, bf_slice.notifier_private_key)
    # At rest: a salted hash, never the code.
    row = await db_pool.fetchrow("SELECT * FROM web.login_requests WHERE id = $1", request_id)
    assert row["email"] == "ada@example.com"
    assert row["code_hash"]
    assert row["code_salt"]
    assert code not in str(dict(row))
    assert code.encode() not in codes.events[request_id]  # sealed on the wire

    resp = await send_code(portal, tenant, request_id, code)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/p/"
    session = await db_pool.fetchrow(
        "SELECT customer_id, sections, expires_at - created_at AS life, portal_session_id "
        "FROM web.browser_sessions WHERE site_id = $1",
        tenant.site_id,
    )
    assert session["customer_id"] == tenant.customer_ids[0]
    assert session["portal_session_id"] is None
    assert session["sections"] == with_site_defaults({"invoices": {"enabled": False}})
    assert timedelta(seconds=895) < session["life"] <= timedelta(seconds=900)
    home = await portal.get("/p/", allow_redirects=False)
    assert home.headers["Location"] == "/p/plan"
    assert (await portal.get("/p/invoices")).status == 404  # the site's default hides it
    assert (await portal.get("/p/plan")).status == 200
    # A code works once.
    again = await send_code(portal, tenant, request_id, code)
    assert "can no longer be used" in texts(await again.text())


async def test_five_wrong_codes_lock_the_code(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool)
    portal = await portal_with(aiohttp_client, bf_settings)
    request_id = await ask_code(portal, tenant, "ada@example.com")
    code = await codes.code(request_id, bf_slice.notifier_private_key)
    for left in (4, 3, 2, 1):
        resp = await send_code(portal, tenant, request_id, other_code(code))
        assert resp.status == 400
        assert f"You have {left} more tr" in texts(await resp.text())
    fifth = await send_code(portal, tenant, request_id, other_code(code))
    assert "entered wrongly too often" in texts(await fifth.text())
    # Locked: even the right code no longer opens anything.
    right = await send_code(portal, tenant, request_id, code)
    assert right.status == 400
    assert "entered wrongly too often" in texts(await right.text())
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.browser_sessions WHERE site_id = $1", tenant.site_id
        )
        == 0
    )


async def test_expired_code_is_refused(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool)
    portal = await portal_with(aiohttp_client, bf_settings)
    request_id = await ask_code(portal, tenant, "ada@example.com")
    code = await codes.code(request_id, bf_slice.notifier_private_key)
    expires = await db_pool.fetchval(
        "SELECT expires_at - created_at FROM web.login_requests WHERE id = $1", request_id
    )
    assert expires == timedelta(minutes=10)
    await db_pool.execute(
        "UPDATE web.login_requests SET expires_at = now() - interval '1 second' WHERE id = $1",
        request_id,
    )
    resp = await send_code(portal, tenant, request_id, code)
    assert resp.status == 400
    assert "That code has expired" in texts(await resp.text())
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.browser_sessions WHERE site_id = $1", tenant.site_id
        )
        == 0
    )


async def test_unknown_email_same_answer_same_work_same_time(
    aiohttp_client: Factory, bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    # The resolver off: what is in the database afterwards is what the requests wrote.
    portal = await portal_with(
        aiohttp_client,
        bf_settings,
        Policy(per_email="1000/minute", per_ip="1000/minute", resolver=False),
    )
    for _ in range(5):  # warm up both paths
        await ask_code(portal, tenant, "ada@example.com")
        await ask_code(portal, tenant, "nobody@example.com")
    await db_pool.execute("DELETE FROM web.login_requests WHERE site_id = $1", tenant.site_id)
    emails = ("ada@example.com", "nobody@example.com")
    answers: dict[str, set[tuple[int, str]]] = {k: set() for k in emails}

    async def medians() -> tuple[float, float]:
        times: dict[str, list[float]] = {k: [] for k in emails}
        for i in range(30):
            # Interleaved, alternating who goes first: load on the machine hits both alike.
            for email in emails if i % 2 == 0 else emails[::-1]:
                start = time.perf_counter()
                resp = await portal.post(
                    f"/s/{tenant.slug}",
                    data={"email": email},
                    headers=SAME_ORIGIN,
                    allow_redirects=False,
                )
                await resp.read()
                times[email].append(time.perf_counter() - start)
                location = resp.headers["Location"].split("r=lr_")[0]
                answers[email].add((resp.status, location))
        return statistics.median(times[emails[0]]), statistics.median(times[emails[1]])

    # Two cores shared with other test runs: a burst of foreign load can skew one round
    # of 30, so up to three rounds are measured; one must show the medians within 25 %.
    # (A lookup in the request would show in every round; the rows below prove the
    # same work whatever the timing.)
    rounds = []
    for _ in range(3):
        known, unknown = await medians()
        rounds.append((known, unknown))
        if abs(known - unknown) <= 0.25 * max(known, unknown):
            break
    else:
        raise AssertionError(f"medians (known, unknown) differ by more than 25 %: {rounds}")
    assert (
        answers["ada@example.com"]
        == answers["nobody@example.com"]
        == {(303, f"/s/{tenant.slug}/code?")}
    )
    # The same work: one unresolved row each, and nothing else (no event, no lookup).
    rows = await db_pool.fetch(
        "SELECT email, count(*) AS n, bool_and(resolved_at IS NULL) AS pending, "
        "bool_and(code_hash IS NULL) AS no_code FROM web.login_requests WHERE site_id = $1 "
        "GROUP BY email",
        tenant.site_id,
    )
    assert {(r["email"], r["n"], r["pending"], r["no_code"]) for r in rows} == {
        ("ada@example.com", 30 * len(rounds), True, True),
        ("nobody@example.com", 30 * len(rounds), True, True),
    }
    outbox = "SELECT count(*) FROM web.outbox WHERE payload->>'site_id' = $1"
    assert await db_pool.fetchval(outbox, tenant.site_id) == 0  # nothing enqueued
    # The code page does not tell them apart either.
    pages = set()
    for email in emails:
        request_id = await ask_code(portal, tenant, email)
        html = await (await portal.get(f"/s/{tenant.slug}/code?r={request_id}")).text()
        pages.add(html.replace(request_id, "lr_X"))
    assert len(pages) == 1


async def test_resolver_sends_only_for_customers_of_the_site(
    aiohttp_client: Factory, bf_settings: Settings, db_pool: asyncpg.Pool, eventually: Any
) -> None:
    tenant = await make_tenant(db_pool)
    other = await make_tenant(db_pool)
    await db_pool.execute(
        "UPDATE mirror.customers SET email = 'only-other@example.com' WHERE site_id = $1",
        other.site_id,
    )
    portal = await portal_with(aiohttp_client, bf_settings)
    known = await ask_code(portal, tenant, "ada@example.com")
    unknown = await ask_code(portal, tenant, "nobody@example.com")
    elsewhere = await ask_code(portal, tenant, "only-other@example.com")

    async def resolved() -> bool:
        n = await db_pool.fetchval(
            "SELECT count(*) FROM web.login_requests WHERE resolved_at IS NOT NULL "
            "AND site_id = $1",
            tenant.site_id,
        )
        return bool(n == 3)

    await eventually(resolved)
    rows = await db_pool.fetch(
        "SELECT id, customer_count, code_hash IS NOT NULL AS coded FROM web.login_requests "
        "WHERE site_id = $1",
        tenant.site_id,
    )
    assert {r["id"]: (r["customer_count"], r["coded"]) for r in rows} == {
        known: (1, True),
        unknown: (0, False),
        elsewhere: (0, False),
    }


async def test_rate_limit_per_email_and_per_ip_says_so(
    aiohttp_client: Factory, bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    portal = await portal_with(
        aiohttp_client, bf_settings, Policy(per_email="2/15 minutes", per_ip="4/15 minutes")
    )
    await ask_code(portal, tenant, "ada@example.com")
    await ask_code(portal, tenant, "ada@example.com")
    resp = await portal.post(
        f"/s/{tenant.slug}", data={"email": "ADA@example.com"}, headers=SAME_ORIGIN
    )
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    text = texts(await resp.text())
    assert "Too many sign-in codes were asked for. Try again in 15 minutes." in text
    # Another address from the same IP: two more, then the IP's limit.
    await ask_code(portal, tenant, "bob@example.com")
    limited_ip = await portal.post(
        f"/s/{tenant.slug}", data={"email": "carol@example.com"}, headers=SAME_ORIGIN
    )
    assert limited_ip.status == 429
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.login_requests WHERE site_id = $1", tenant.site_id
        )
        == 3
    )
    # German, too.
    de = await portal.post(
        f"/s/{tenant.slug}",
        data={"email": "ada@example.com"},
        headers={**SAME_ORIGIN, "Accept-Language": "de"},
    )
    assert "Es wurden zu viele Anmeldecodes angefordert" in texts(await de.text())


async def test_redis_down_refuses_codes_and_tries_stay_counted(
    aiohttp_client: Factory,
    bf_settings: Settings,
    bf_slice: Slice,
    db_pool: asyncpg.Pool,
    codes: CodeWatch,
) -> None:
    tenant = await make_tenant(db_pool)
    up = await portal_with(aiohttp_client, bf_settings)
    request_id = await ask_code(up, tenant, "ada@example.com")
    code = await codes.code(request_id, bf_slice.notifier_private_key)
    for _ in range(2):
        await send_code(up, tenant, request_id, other_code(code))

    down_settings = bf_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    down = await portal_with(aiohttp_client, down_settings)
    resp = await down.post(
        f"/s/{tenant.slug}", data={"email": "ada@example.com"}, headers=SAME_ORIGIN
    )
    assert resp.status == 503
    assert "Sign-in is unavailable right now" in texts(await resp.text())
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.login_requests WHERE site_id = $1", tenant.site_id
        )
        == 1
    )
    # The tries counted before Redis went away still count: three more lock the code.
    for left in (2, 1):
        wrong = await send_code(down, tenant, request_id, other_code(code))
        assert f"You have {left} more tr" in texts(await wrong.text())
    await send_code(down, tenant, request_id, other_code(code))
    locked = await send_code(down, tenant, request_id, code)
    assert "entered wrongly too often" in texts(await locked.text())


async def test_bad_input_and_other_origins(
    aiohttp_client: Factory, bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    portal = await portal_with(aiohttp_client, bf_settings)
    bad = await portal.post(
        f"/s/{tenant.slug}", data={"email": "not an email"}, headers=SAME_ORIGIN
    )
    assert bad.status == 400
    assert "Enter an email address such as name@example.com." in texts(await bad.text())
    assert (await portal.get("/s/no-such-site")).status == 404
    cross = await portal.post(
        f"/s/{tenant.slug}",
        data={"email": "ada@example.com"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status == 403
    nonsense = await send_code(portal, tenant, "lr_nope", "12ab56")
    assert nonsense.status == 400
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM web.login_requests WHERE site_id = $1", tenant.site_id
        )
        == 0
    )
    de = await portal.get(f"/s/{tenant.slug}", headers={"Accept-Language": "de"})
    assert "Bei Ihrem Abrechnungsportal anmelden" in texts(await de.text())


async def test_used_link_offers_sign_in_without_naming_anyone(
    aiohttp_client: Factory,
    bf_settings: Settings,
    db_pool: asyncpg.Pool,
    api: Any,
) -> None:
    tenant = await make_tenant(db_pool)
    portal = await portal_with(aiohttp_client, bf_settings)
    plain = await create_link(api, tenant)
    cancel = await create_link(
        api, tenant, flow={"type": "subscription_cancel", "subscription": "sub_123"}
    )
    for created, where in ((plain, f"/s/{tenant.slug}"), (cancel, f"/s/{tenant.slug}?next=plan")):
        first = await portal.post(f"/r/{created['token']}", allow_redirects=False)
        assert first.status == 303
        portal.session.cookie_jar.clear()
        again = await portal.get(f"/r/{created['token']}")
        assert again.status == 410
        html = await again.text()
        assert "This link has already been used" in texts(html)
        assert f'href="{where.replace("&", "&amp;")}"' in html
        assert "Email me a sign-in code" in texts(html)
        assert "Ada" not in html
        assert "ada@example.com" not in html
    # An unknown link belongs to no site: nothing to offer.
    unknown = await portal.get("/r/bfl_nothing_here")
    assert "Email me a sign-in code" not in texts(await unknown.text())


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLFOLD_SIGN_IN_PER_IP", "100/minute")
    policy = Policy.from_environment()
    assert (policy.per_email, policy.per_ip) == ("5/15 minutes", "100/minute")
    monkeypatch.setenv("BILLFOLD_SIGN_IN_PER_EMAIL", "often")
    with pytest.raises(SettingsError):
        Policy.from_environment()


async def test_per_ip_limit_behind_a_proxy_counts_the_client(
    aiohttp_client: Factory, bf_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(db_pool)
    # The test client connects from loopback: that is the trusted ingress here.
    portal = await portal_with(
        aiohttp_client,
        bf_settings.model_copy(update={"trusted_proxies": ("127.0.0.1/32", "::1/128")}),
        Policy(per_email="100/minute", per_ip="2/15 minutes"),
    )

    async def ask(email: str, forwarded: str) -> int:
        resp = await portal.post(
            f"/s/{tenant.slug}",
            data={"email": email},
            headers={**SAME_ORIGIN, "X-Forwarded-For": forwarded},
            allow_redirects=False,
        )
        return resp.status

    # Client A: two codes, then limited, whatever it claims further left in the header.
    assert await ask("a1@example.com", "198.51.100.7") == 303
    assert await ask("a2@example.com", "203.0.113.99, 198.51.100.7") == 303
    assert await ask("a3@example.com", "1.2.3.4, 198.51.100.7") == 429
    # Client B, through the same proxy (the same TCP peer), has its own budget.
    assert await ask("b1@example.com", "192.0.2.55") == 303
    ips = await db_pool.fetch(
        "SELECT DISTINCT ip FROM web.login_requests WHERE site_id = $1", tenant.site_id
    )
    assert {r["ip"] for r in ips} == {"198.51.100.7", "192.0.2.55"}
