"""Stripe webhook ingest: receipt -> mirror row visible, and acceptance throughput.

    uv run python bench/webhook_ingest.py [--rate 200] [--duration 30] [--burst 3000]

It makes an isolated database, vhost and Redis prefix (as the tests do), starts the fake
Stripe (``python -m billfold_testing.stripe_fake``), the real billing-sync
(``python -m billing_sync``: webhooks in, worker, outbox relay) and the bare baseline
(``bench/bare_webhook.py``: verify the signature, INSERT the raw event) as separate
processes, all on 127.0.0.1. One site is configured with a webhook secret and its own
Stripe key; ``--rate x --duration`` customers are created at the fake under that key
(billing-sync fetches each event's object from Stripe, so it must exist there), and
the site is marked reconciled so no backfill makes rows appear by another road. Then:

1. steady load: ``--rate`` signed ``customer.created`` events/s for ``--duration`` s, open
   loop (sent on schedule whether or not earlier ones were answered), one per customer.
   A poller looks for each customer's row in ``mirror.customers`` every ``--poll`` s;
   p50/p99 of "POST sent -> row visible" are printed (goal: p99 < 250 ms at 200/s). The
   time from sending, not from billing-sync's receipt, so the figure includes the
   acceptance itself; the poll period adds up to ``--poll`` s.
2. saturation: ``--burst`` signed events (``customer.updated`` for the same customers) as
   fast as ``--concurrency`` connections allow, to billing-sync and then to the bare
   handler (once billing-sync's worker has processed the burst, so the baseline does not
   share the CPU with it); accepted/s for each, their ratio (goal: >= 0.5), and how long
   the worker took to process the burst after the last one was accepted.

Every event must be answered 200 and every steady customer must appear; it fails otherwise.

The fake runs without its access log (its CPU competes with billing-sync's on a small
machine). ``BENCH_SYNC_CMD`` / ``BENCH_FAKE_CMD`` replace ``-m billing_sync`` /
``-m billfold_testing.stripe_fake`` (e.g. a script that runs them under cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop
from benchkit import cpu_seconds, free_port, pct, wait_ready

from billfold_testing.infra import Slice, create_slice, destroy_slice
from billfold_testing.stripe_fake.webhooks import sign
from billing_sync import accounts
from billing_sync.secrets import SecretBox
from billing_sync.settings import new_secrets_key

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
# Bounds: a benchmark, not a load-testing tool to point at anything.
MAX_RATE, MAX_DURATION, MAX_BURST = 2000.0, 300.0, 50_000
API_VERSION = "2024-06-20"


def spawn(cmd: list[str], env: dict[str, str], *, stderr: bool = False) -> subprocess.Popen[bytes]:
    """``stderr``: let its errors through (billing-sync logs at warning: a crash says why)."""
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=None if stderr else subprocess.DEVNULL
    )


def event(kind: str, customer: dict[str, Any]) -> str:
    return json.dumps(
        {
            "id": f"evt_bench_{secrets.token_hex(10)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
            "data": {"object": customer},
        }
    )


@dataclass
class Target:
    url: str
    secret: str

    async def post(self, http: aiohttp.ClientSession, payload: str) -> None:
        headers = {
            "Stripe-Signature": sign(payload, self.secret),
            "Content-Type": "application/json",
        }
        async with http.post(self.url, data=payload.encode(), headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{self.url}: {resp.status} {await resp.text()}")
            await resp.read()


async def create_customers(base_url: str, api_key: str, count: int) -> list[dict[str, Any]]:
    """``count`` customers at the fake Stripe, under the site's own key."""
    headers = {"Authorization": f"Bearer {api_key}"}
    sem = asyncio.Semaphore(16)
    made: list[dict[str, Any]] = []

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        async with (
            sem,
            http.post(
                f"{base_url}/v1/customers",
                data={"email": f"bench{i}@example.com", "name": f"Bench {i}"},
            ) as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(f"fake Stripe: {resp.status} {await resp.text()}")
            made.append(await resp.json())

    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(*(one(http, i) for i in range(count)))
    return made


class MirrorPoller:
    """Records when each awaited customer's row first shows up in ``mirror.customers``."""

    def __init__(self, pool: asyncpg.Pool, site_id: str, period: float) -> None:
        self.pool, self.site_id, self.period = pool, site_id, period
        self.pending: set[str] = set()
        self.visible: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            if self.pending:
                rows = await self.pool.fetch(
                    "SELECT stripe_id FROM mirror.customers "
                    "WHERE site_id = $1 AND stripe_id = ANY($2::text[])",
                    self.site_id,
                    list(self.pending),
                )
                now = time.monotonic()
                for row in rows:
                    self.pending.discard(row["stripe_id"])
                    self.visible[row["stripe_id"]] = now
            await asyncio.sleep(self.period)

    async def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.pending)} customers never reached the mirror")
            await asyncio.sleep(0.05)


async def steady(
    args: argparse.Namespace,
    target: Target,
    poller: MirrorPoller,
    customers: list[dict[str, Any]],
) -> tuple[float, list[float], list[tuple[float, float]]]:
    """Open loop at ``args.rate``: returns (accepted/s from the first send to the last
    answer, sent -> 200 in ms, (sent at s from the start, sent -> visible in ms))."""
    sent: dict[str, float] = {}
    accepted: list[float] = []

    async def one(http: aiohttp.ClientSession, customer: dict[str, Any]) -> None:
        payload = event("customer.created", customer)
        t0 = time.monotonic()
        sent[customer["id"]] = t0
        poller.pending.add(customer["id"])
        await target.post(http, payload)
        accepted.append((time.monotonic() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = []
        start = time.monotonic()
        for i, customer in enumerate(customers):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, customer)))
        await asyncio.gather(*tasks)
        rate = len(accepted) / (time.monotonic() - start)
    await poller.wait_all(timeout=300)
    visible = [(t0 - start, (poller.visible[cid] - t0) * 1000) for cid, t0 in sent.items()]
    return rate, accepted, visible


async def saturate(target: Target, payloads: list[str], concurrency: int) -> float:
    """Accepted events/s with ``concurrency`` connections each posting back to back."""
    queue = iter(payloads)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def lane() -> None:
            for payload in queue:
                await target.post(http, payload)

        first = time.monotonic()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return len(payloads) / (time.monotonic() - first)


async def unprocessed(pool: asyncpg.Pool, site_id: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1 AND processed_at IS NULL",
            site_id,
        )
    )


async def run(args: argparse.Namespace, piece: Slice) -> None:
    secrets_key = new_secrets_key()
    webhook_secret = f"whsec_{secrets.token_hex(16)}"
    site_key = f"sk_test_{secrets.token_hex(12)}"
    env = {
        **os.environ,
        **piece.env,
        "BILLFOLD_LOG_LEVEL": "warning",
        "BILLFOLD_BILLING_SECRETS_KEY": secrets_key,
    }
    dsn = piece.env["BILLFOLD_DATABASE_URL"]
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    site_id = f"site_{secrets.token_hex(12)}"
    async with pool.acquire() as conn, conn.transaction():
        # The site as session-api makes it; its Stripe configuration as
        # `billfold stripe configure` stores it (secrets encrypted).
        await conn.execute(
            "INSERT INTO portal.sites (id, slug, name) VALUES ($1, $2, 'Bench')",
            site_id,
            f"bench-{secrets.token_hex(6)}",
        )
        await accounts.configure(
            conn,
            SecretBox(base64.b64decode(secrets_key)),
            site_id,
            webhook_secret=webhook_secret,
            api_key=site_key,
        )
        # Reconciled just now: no backfill lists the customers behind the webhooks' back.
        await conn.execute(
            "UPDATE mirror.stripe_accounts SET reconciled_at = now() WHERE site_id = $1",
            site_id,
        )

    stripe_port, sync_port, bare_port = free_port(), free_port(), free_port()
    procs = [
        spawn(
            [
                sys.executable,
                *os.environ.get("BENCH_FAKE_CMD", "-m billfold_testing.stripe_fake").split(),
                "--port",
                str(stripe_port),
                "--no-access-log",
            ],
            env,
        )
    ]
    stripe_url = f"http://{LOOPBACK}:{stripe_port}"
    try:
        await wait_ready(
            f"{stripe_url}/v1/customers?limit=1", headers={"Authorization": f"Bearer {site_key}"}
        )
        warm_n, total = 50, int(args.rate * args.duration)
        made = await create_customers(stripe_url, site_key, warm_n + total)
        warm, customers = made[:warm_n], made[warm_n:]
        procs.append(
            spawn(
                [sys.executable, *os.environ.get("BENCH_SYNC_CMD", "-m billing_sync").split()],
                {
                    **env,
                    "BILLFOLD_BILLING_SYNC_PORT": str(sync_port),
                    "BILLFOLD_STRIPE_API_BASE": stripe_url,
                },
                stderr=True,
            )
        )
        procs.append(
            spawn(
                [
                    sys.executable,
                    str(HERE / "bare_webhook.py"),
                    f"--port={bare_port}",
                    f"--dsn={dsn}",
                ],
                {**env, "BENCH_WEBHOOK_SECRET": webhook_secret},
            )
        )
        await wait_ready(f"http://{LOOPBACK}:{sync_port}/readyz")
        await wait_ready(f"http://{LOOPBACK}:{bare_port}/readyz")
        path = f"/stripe/webhooks/{site_id}"
        sync = Target(f"http://{LOOPBACK}:{sync_port}{path}", webhook_secret)
        bare = Target(f"http://{LOOPBACK}:{bare_port}{path}", webhook_secret)

        poller = MirrorPoller(pool, site_id, args.poll)
        polling = asyncio.create_task(poller.run())
        try:
            # Warm-up: connections, prepared statements, the fake's and the worker's paths.
            await steady(argparse.Namespace(rate=args.rate), sync, poller, warm)
            async with aiohttp.ClientSession() as http:
                await asyncio.gather(*(bare.post(http, event("customer.created", c)) for c in warm))

            # 1. steady rate, open loop; CPU used per event by billing-sync and the fake
            cpu_before = [cpu_seconds(p) for p in procs[:2]]
            accepted_rate, accepted, timeline = await steady(args, sync, poller, customers)
            visible = [ms for _, ms in timeline]
            cpu_ms = [
                (cpu_seconds(p) - before) * 1000 / total
                for p, before in zip(procs[:2], cpu_before, strict=True)
            ]
        finally:
            polling.cancel()

        # 2. saturation: billing-sync, then (once its worker is idle again, so the
        # baseline does not share the CPU with it) the bare handler; same payload sizes.
        def burst() -> list[str]:
            return [
                event("customer.updated", customers[i % len(customers)]) for i in range(args.burst)
            ]

        sync_rate = await saturate(sync, burst(), args.concurrency)
        burst_done = time.monotonic()
        while (left := await unprocessed(pool, site_id)) > 0:
            if time.monotonic() - burst_done > 300:
                raise RuntimeError(f"{left} events still unprocessed after 300 s")
            await asyncio.sleep(0.05)
        drained = time.monotonic() - burst_done
        bare_rate = await saturate(bare, burst(), args.concurrency)
        failed = await pool.fetchval(
            "SELECT count(*) FROM mirror.stripe_events "
            "WHERE site_id = $1 AND failed_at IS NOT NULL",
            site_id,
        )
        if failed:
            raise RuntimeError(f"{failed} events failed processing")
    finally:
        await pool.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.to_thread(proc.wait, 15)

    print(
        f"\nsteady: {args.rate:g} signed events/s for {args.duration:g} s ({total} events, "
        f"each a distinct customer; mirror polled every {args.poll * 1000:g} ms)"
    )
    print(
        f"  accepted: {accepted_rate:.0f}/s; sent -> 200: p50 "
        f"{pct(accepted, 0.5):.0f} ms, p99 {pct(accepted, 0.99):.0f} ms"
    )
    print(
        f"  sent -> mirror row visible: p50 {pct(visible, 0.5):.0f} ms, p99 "
        f"{pct(visible, 0.99):.0f} ms, max {max(visible):.0f} ms  (goal: p99 < 250 ms)"
    )
    # The latency by when the event was sent: a growing backlog shows as a rising p50.
    windows = max(1, int(args.duration // 5))
    span = args.duration / windows
    trend = []
    for w in range(windows):
        part = [ms for at, ms in timeline if w * span <= at < (w + 1) * span]
        trend.append(f"{pct(part, 0.5):.0f}" if part else "-")
    print(f"  p50 ms by {span:g} s of sending: {' '.join(trend)}; min {min(visible):.0f} ms")
    print(
        f"  CPU per event: billing-sync {cpu_ms[1]:.1f} ms, fake Stripe {cpu_ms[0]:.1f} ms "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"saturation: {args.burst} events, {args.concurrency} connections")
    print(f"  billing-sync accepted {sync_rate:.0f}/s; bare verify+INSERT {bare_rate:.0f}/s")
    print(f"  ratio billing-sync / bare: {sync_rate / bare_rate:.2f}  (goal: >= 0.5)")
    processed = args.burst / (args.burst / sync_rate + drained)
    print(
        f"  billing-sync processed the whole burst {drained:.1f} s after accepting it "
        f"({processed:.0f} events/s from the first accepted to the last processed)"
    )


def bounded(kind: type[float] | type[int], low: float, high: float) -> Any:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within [{low:g}, {high:g}]")
        return value

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=bounded(float, 1, MAX_RATE), default=200.0)
    parser.add_argument("--duration", type=bounded(float, 1, MAX_DURATION), default=30.0)
    parser.add_argument("--burst", type=bounded(int, 100, MAX_BURST), default=3000)
    parser.add_argument("--concurrency", type=bounded(int, 1, 256), default=32)
    parser.add_argument("--poll", type=bounded(float, 0.001, 0.1), default=0.005)
    args = parser.parse_args()
    piece = create_slice()
    try:
        uvloop.run(run(args, piece))
    finally:
        destroy_slice(piece)


if __name__ == "__main__":
    main()
