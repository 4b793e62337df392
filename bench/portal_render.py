"""The portal's Plan page under load, against a bare Redis-GET-and-static-page handler.

    uv run python bench/portal_render.py [-n 4000] [-c 32] [--rounds 3]

It makes an isolated database, vhost and Redis prefix (as the tests do), creates a site
and a customer with 3 subscriptions (flat, per seat, tiered) and 24 invoices in the
mirror, starts the real session-api and portal-web (``python -m …``) and the bare
baseline (``bench/bare_page.py``, one Redis GET and a static page of the Plan page's
size) as separate processes, and drives ``GET /p/plan`` with a valid browser session
(cookie) and the bare page alike, alternating, at the same concurrency with the same
keep-alive client. It prints pages/s, p50 and p99 of both and the ratio of medians.

Then, on portal-web alone: link exchange latency (``GET /r/{token}`` then ``POST``,
which consumes the link and sets the session), and revoke-to-refusal latency (session
API ``DELETE`` answered, then the browser session's next page refused).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from benchkit import cpu_seconds, demo_tenant, free_port, pct, run_in_slice, spawn, wait_ready

from billfold_testing.infra import Slice

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = 0.0  # the server process's CPU per page


async def measure(
    proc: subprocess.Popen[bytes],
    url: str,
    headers: dict[str, str],
    n: int,
    c: int,
    *,
    distinct: bool = False,
) -> Result:
    before = cpu_seconds(proc)
    result = await drive(url, headers, n, c, distinct=distinct)
    result.cpu_ms = (cpu_seconds(proc) - before) * 1000 / n
    return result


async def drive(
    url: str, headers: dict[str, str], n: int, c: int, *, distinct: bool = False
) -> Result:
    """``n`` GETs of ``url``, ``c`` at a time; ``distinct``: each with its own query
    string, so that no page is ever rendered twice from the same inputs (the portal's
    page memo misses every time: a customer's first view)."""
    latencies: list[float] = []
    errors = 0
    remaining = n
    connector = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                target = f"{url}?v={remaining}" if distinct else url
                start = time.perf_counter()
                async with http.get(target, allow_redirects=False) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        elapsed = time.perf_counter() - started
    return Result(n / elapsed, pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000, errors)


async def fill_mirror(dsn: str, site_id: str, customer_id: str) -> None:
    """3 subscriptions and 24 invoices, as billing-sync would have mirrored them."""
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(days=10), now + timedelta(days=20)
    plans = [
        ("flat", [("Pro", "flat", 4900, None, 1)]),
        ("seats", [("Team", "per_unit", 1200, None, 5)]),
        (
            "tiers",
            [
                (
                    "API",
                    "graduated",
                    None,
                    [{"up_to": 1000, "unit_amount": 2}, {"up_to": None, "unit_amount": 1}],
                    1,
                )
            ],
        ),
    ]
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        async with conn.transaction():
            for i, (name, items) in enumerate(plans):
                sub = f"sub_bench_{name}_{secrets.token_hex(4)}"
                await conn.execute(
                    """
                    INSERT INTO mirror.subscriptions (stripe_id, site_id, customer_id,
                        stripe_customer_id, status, currency, cancel_at_period_end,
                        current_period_start, current_period_end, next_charge_at,
                        next_charge_amount, next_charge_currency, created)
                    VALUES ($1, $2, $3, 'cus_bench', 'active', 'usd', $4, $5, $6, $6, 4900,
                            'usd', $7)
                    """,
                    sub,
                    site_id,
                    customer_id,
                    i == 1,
                    start,
                    end,
                    now - timedelta(days=i),
                )
                for product, model, unit, tiers, quantity in items:
                    await conn.execute(
                        """
                        INSERT INTO mirror.subscription_items (stripe_id, subscription_id,
                            site_id, price_id, product_name, price_model, unit_amount, tiers,
                            quantity, interval, interval_count, currency)
                        VALUES ($1, $2, $3, 'price_bench', $4, $5, $6, $7, $8, 'month', 1,
                                'usd')
                        """,
                        f"si_{secrets.token_hex(6)}",
                        sub,
                        site_id,
                        product,
                        model,
                        unit,
                        tiers,
                        quantity,
                    )
            for i in range(24):
                inv = f"in_bench_{secrets.token_hex(6)}"
                await conn.execute(
                    """
                    INSERT INTO mirror.invoices (stripe_id, site_id, customer_id,
                        stripe_customer_id, number, status, created, due_date, total,
                        amount_remaining, currency, hosted_invoice_url, invoice_pdf)
                    VALUES ($1, $2, $3, 'cus_bench', $4, 'paid', $5, $5, 4900, 0, 'usd',
                            $6, $7)
                    """,
                    inv,
                    site_id,
                    customer_id,
                    f"BENCH-{i:04d}",
                    now - timedelta(days=30 * i),
                    f"https://invoice.stripe.com/i/{inv}",
                    f"https://pay.stripe.com/invoice/{inv}/pdf",
                )
    finally:
        await conn.close()


class Portal:
    """session-api (links) and portal-web (pages), as a tenant and a browser use them."""

    def __init__(self, api: str, web: str, key: str, customer: str) -> None:
        self.api, self.web, self.customer = api, web, customer
        self.auth = {"Authorization": f"Bearer {key}"}

    async def link(self, http: aiohttp.ClientSession) -> dict[str, str]:
        async with http.post(
            f"{self.api}/v1/portal_sessions", json={"customer": self.customer}, headers=self.auth
        ) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]

    async def enter(self, http: aiohttp.ClientSession, token: str) -> str:
        """GET the link page, POST it; the browser session's cookie header."""
        async with http.get(f"{self.web}/r/{token}") as resp:
            assert resp.status == 200, resp.status
            await resp.read()
        async with http.post(f"{self.web}/r/{token}", allow_redirects=False) as resp:
            assert resp.status == 303, resp.status
            cookie = resp.cookies["bf_session"].value
        return f"bf_session={cookie}"


async def link_exchange(portal: Portal, n: int, c: int) -> tuple[float, float]:
    """p50/p99 (ms) of GET + POST of a fresh link, ``c`` links at a time."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        links = [await portal.link(http) for _ in range(n)]
        latencies: list[float] = []
        queue = list(links)

        async def worker() -> None:
            while queue:
                link = queue.pop()
                start = time.perf_counter()
                await portal.enter(http, link["token"])
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(c)))
    return pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000


async def revoke_to_refusal(portal: Portal, n: int) -> tuple[float, float, float, int]:
    """Per session: DELETE, then the next page. Returns p50/p99 (ms) from sending the
    DELETE to the refused page, the p50 of the refused page alone, and how many next
    pages were NOT refused (must be 0)."""
    total: list[float] = []
    page: list[float] = []
    missed = 0
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for _ in range(n):
            link = await portal.link(http)
            cookie = {"Cookie": await portal.enter(http, link["token"])}
            async with http.get(f"{portal.web}/p/plan", headers=cookie) as resp:
                assert resp.status == 200
                await resp.read()
            start = time.perf_counter()
            async with http.delete(
                f"{portal.api}/v1/portal_sessions/{link['id']}", headers=portal.auth
            ) as resp:
                assert resp.status == 204
            answered = time.perf_counter()
            async with http.get(f"{portal.web}/p/plan", headers=cookie) as resp:
                await resp.read()
                if resp.status != 410:
                    missed += 1
            done = time.perf_counter()
            total.append(done - start)
            page.append(done - answered)
    return pct(total, 0.5) * 1000, pct(total, 0.99) * 1000, pct(page, 0.5) * 1000, missed


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


async def run(args: argparse.Namespace, piece: Slice) -> None:
    print(f"before: {load()}")
    env = {**os.environ, **piece.env, "BILLFOLD_LOG_LEVEL": args.log_level}
    tenant = await demo_tenant(env, piece.settings.database_url)
    await fill_mirror(piece.settings.database_url, tenant.site_id, tenant.customer_id)
    api_port, web_port, bare_port = free_port(), free_port(), free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    procs = [
        spawn(
            [sys.executable, "-m", "session_api"],
            {**env, "BILLFOLD_SESSION_API_PORT": str(api_port)},
        ),
        spawn(
            [sys.executable, "-m", "portal_web"],
            {**env, "BILLFOLD_PORTAL_WEB_PORT": str(web_port), "BILLFOLD_PORTAL_BASE_URL": web_url},
        ),
    ]
    try:
        await wait_ready(f"http://127.0.0.1:{api_port}/readyz", timeout=30)
        await wait_ready(f"{web_url}/readyz", timeout=30)
        portal = Portal(f"http://127.0.0.1:{api_port}", web_url, tenant.api_key, tenant.customer_id)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            cookie = {"Cookie": await portal.enter(http, (await portal.link(http))["token"])}
            async with http.get(f"{web_url}/p/plan", headers=cookie) as resp:
                body = await resp.read()
                assert resp.status == 200, resp.status
                assert body.count(b'class="card plan"') == 3, body[:500]
        size = len(body)
        procs.append(
            spawn(
                [
                    sys.executable,
                    str(HERE / "bare_page.py"),
                    "--port",
                    str(bare_port),
                    "--redis-url",
                    piece.settings.redis_url,
                    "--key",
                    f"{piece.settings.redis_prefix}bench:bare",
                    "--size",
                    str(size),
                ],
                env,
            )
        )
        bare_url = f"http://127.0.0.1:{bare_port}/p/plan"
        await wait_ready(bare_url, timeout=30)
        rows: dict[str, list[Result]] = {"portal Plan": [], "bare page": [], "first views": []}
        if args.profile:
            # py-spy (on PATH) samples portal-web while the Plan page is driven.
            spy_cmd = ["py-spy", "record", "-p", str(procs[1].pid), "-d", "8", "-r", "200"]
            spy = subprocess.Popen([*spy_cmd, "-f", "raw", "-o", args.profile])  # noqa: ASYNC220
            await drive(f"{web_url}/p/plan", cookie, args.n * 3, args.concurrency)
            spy.wait(timeout=60)
        for _ in range(args.rounds):
            # Alternate the two so drift on the machine hits both alike.
            await drive(bare_url, {}, 300, args.concurrency)
            rows["bare page"].append(
                await measure(procs[2], bare_url, {}, args.n, args.concurrency)
            )
            await drive(f"{web_url}/p/plan", cookie, 300, args.concurrency)
            rows["portal Plan"].append(
                await measure(procs[1], f"{web_url}/p/plan", cookie, args.n, args.concurrency)
            )
            rows["first views"].append(
                await measure(
                    procs[1], f"{web_url}/p/plan", cookie, args.n, args.concurrency, distinct=True
                )
            )
        print(
            f"\nPlan page ({size} bytes; 3 subscriptions, 24 invoices): n={args.n} per round, "
            f"concurrency={args.concurrency}, rounds={args.rounds}, log level {args.log_level} "
            "(medians)"
        )
        print(
            f"{'target':<14}{'pages/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
            f"{'CPU ms/page':>13}"
        )
        med: dict[str, float] = {}
        for name, results in rows.items():
            med[name] = statistics.median(r.rate for r in results)
            print(
                f"{name:<14}{med[name]:>10.0f}"
                f"{statistics.median(r.p50_ms for r in results):>10.2f}"
                f"{statistics.median(r.p99_ms for r in results):>10.2f}"
                f"{sum(r.errors for r in results):>8}"
                f"{statistics.median(r.cpu_ms for r in results):>13.3f}"
            )
        print(
            f"ratio portal Plan / bare page: {med['portal Plan'] / med['bare page']:.2f}"
            "  (goal >= 0.40)"
        )
        print(
            "  (first views: every page rendered anew, the page memo never hits; "
            f"ratio {med['first views'] / med['bare page']:.2f})"
        )
        p50, p99 = await link_exchange(portal, args.links, min(8, args.concurrency))
        print(
            f"\nlink exchange (GET /r/{{token}} + POST, {args.links} links, 8 at a time): "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
        r50, r99, page50, missed = await revoke_to_refusal(portal, args.revokes)
        print(
            f"revoke to refusal ({args.revokes} sessions, one at a time): DELETE sent to next "
            f"page refused p50 {r50:.2f} ms, p99 {r99:.2f} ms; the refused page alone "
            f"p50 {page50:.2f} ms; next page not refused: {missed}"
        )
        print(f"after: {load()}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=4000, help="pages per round and target")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--links", type=int, default=400, help="links exchanged")
    parser.add_argument("--revokes", type=int, default=100, help="sessions revoked")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--profile", help="write a py-spy raw profile of portal-web here")
    args = parser.parse_args()
    run_in_slice(lambda piece: run(args, piece))


if __name__ == "__main__":
    main()
