"""Session-create throughput and latency, against a bare one-INSERT handler in the same run.

    uv run python bench/session_create.py [-n 4000] [-c 32] [--rounds 3]

It makes an isolated database, vhost and Redis prefix (as the tests do), starts the real
session-api (``python -m session_api``, with its outbox relay publishing to RabbitMQ) and
the bare baseline (``bench/bare_insert.py``) as separate processes, drives each with the
same keep-alive HTTP client at the same concurrency, and prints creates/s, p50 and p99 for
both and the ratio of medians over the rounds. It also checks that every created session's
event left the outbox, so a fast number cannot hide a relay that fell behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import uvloop
from benchkit import demo_tenant, free_port, wait_ready

from billfold_testing.infra import Slice, create_slice, destroy_slice

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


async def drive(
    url: str, headers: dict[str, str], body: dict[str, object], n: int, c: int
) -> Result:
    latencies: list[float] = []
    errors = 0
    remaining = n
    connector = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                async with http.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status != 201:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        rate=n / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        errors=errors,
    )


async def outbox_drained(dsn: str, timeout: float = 30) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if await conn.fetchval("SELECT count(*) FROM portal.outbox") == 0:
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise RuntimeError("outbox did not drain: the relay fell behind")
    finally:
        await conn.close()


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(args: argparse.Namespace, piece: Slice) -> None:
    env = {**os.environ, **piece.env, "BILLFOLD_LOG_LEVEL": args.log_level}
    tenant = await demo_tenant(env, piece.settings.database_url)
    customer = tenant.customer_id
    api_port, bare_port = free_port(), free_port()
    api = start(
        [sys.executable, "-m", "session_api"], {**env, "BILLFOLD_SESSION_API_PORT": str(api_port)}
    )
    bare = start(
        [
            sys.executable,
            str(HERE / "bare_insert.py"),
            "--port",
            str(bare_port),
            "--dsn",
            piece.settings.database_url,
        ],
        env,
    )
    try:
        api_url = f"http://127.0.0.1:{api_port}/v1/portal_sessions"
        bare_url = f"http://127.0.0.1:{bare_port}/v1/portal_sessions"
        await wait_ready(f"http://127.0.0.1:{api_port}/readyz", timeout=30)
        # The bare handler has no GET route: any answer means it is up.
        await wait_ready(bare_url, timeout=30, ready=(200, 404, 405))
        auth = {"Authorization": f"Bearer {tenant.api_key}"}
        body = {"customer": customer}
        rows: dict[str, list[Result]] = {"session-api": [], "bare INSERT": []}
        for _ in range(args.rounds):
            # Alternate the two so drift on the machine hits both alike.
            await drive(bare_url, {}, body, 200, args.concurrency)
            rows["bare INSERT"].append(await drive(bare_url, {}, body, args.n, args.concurrency))
            await drive(api_url, auth, body, 200, args.concurrency)
            rows["session-api"].append(await drive(api_url, auth, body, args.n, args.concurrency))
            drain = await outbox_drained(piece.settings.database_url)
            print(f"  round done; outbox drained {drain * 1000:.0f} ms after the last create")
        print(
            f"\nsession create: n={args.n} per round, concurrency={args.concurrency}, "
            f"rounds={args.rounds}, log level {args.log_level} (medians)"
        )
        print(f"{'target':<14}{'creates/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        med: dict[str, float] = {}
        for name, results in rows.items():
            med[name] = statistics.median(r.rate for r in results)
            print(
                f"{name:<14}{med[name]:>12.0f}"
                f"{statistics.median(r.p50_ms for r in results):>10.2f}"
                f"{statistics.median(r.p99_ms for r in results):>10.2f}"
                f"{sum(r.errors for r in results):>8}"
            )
        print(
            f"ratio session-api / bare INSERT: {med['session-api'] / med['bare INSERT']:.2f}"
            "  (goal >= 0.50)"
        )
    finally:
        for proc in (api, bare):
            proc.terminate()
            proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=4000, help="creates per round and target")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args()
    piece = create_slice()
    try:
        uvloop.run(run(args, piece))
    finally:
        destroy_slice(piece)


if __name__ == "__main__":
    main()
