"""Emailed-link latency: from a session create's 201 to the message accepted by SMTP.

    uv run python bench/notify_latency.py [--rate 50] [--duration 30] [--burst 2000]

It makes an isolated database, vhost and Redis prefix (as the tests do), starts the real
session-api and notifier (``python -m ...``) as separate processes and an SMTP sink
(aiosmtpd, ``billfold_testing.smtp_sink``) in this one, then:

1. steady load: ``--rate`` creates/s with ``send_email: true`` for ``--duration`` s,
   open loop (a create is sent on schedule whether or not earlier ones answered); each
   email is matched to its create by the link it carries, and p50/p99 of "201 received
   -> message accepted by the sink" are printed (goal: p99 < 1 s at 50/s);
2. saturation: ``--burst`` creates as fast as 32 connections allow; emails/s is the
   burst size over the time from the first create to the last email accepted.

Every create must produce exactly one email; the script fails otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from pathlib import Path

import aiohttp
import uvloop
from benchkit import demo_tenant, free_port, pct, spawn, wait_for_mail, wait_ready

from billfold_testing.infra import Slice, create_slice, destroy_slice
from billfold_testing.smtp_sink import SmtpSink

HERE = Path(__file__).resolve().parent


async def create(
    http: aiohttp.ClientSession, url: str, body: dict[str, object], answered: dict[str, float]
) -> None:
    async with http.post(url, json=body) as resp:
        data = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"create failed: {resp.status} {data}")
        answered[data["url"]] = time.monotonic()


async def run(args: argparse.Namespace, piece: Slice) -> None:
    sink = SmtpSink()
    smtp_port = await sink.start()
    data_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {
        **os.environ,
        **piece.env,
        "BILLFOLD_LOG_LEVEL": "warning",
        "BILLFOLD_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "BILLFOLD_NOTIFIER_DATA_KEY": data_key,
    }
    tenant = await demo_tenant(env, piece.settings.database_url)
    body = {"customer": tenant.customer_id, "send_email": True}
    api_port, notifier_port = free_port(), free_port()
    procs = [
        spawn(
            [sys.executable, "-m", "session_api"],
            {**env, "BILLFOLD_SESSION_API_PORT": str(api_port)},
        ),
        spawn(
            [sys.executable, "-m", "notifier"],
            {**env, "BILLFOLD_NOTIFIER_PORT": str(notifier_port)},
        ),
    ]
    try:
        await wait_ready(f"http://127.0.0.1:{api_port}/readyz")
        await wait_ready(f"http://127.0.0.1:{notifier_port}/readyz")
        url = f"http://127.0.0.1:{api_port}/v1/portal_sessions"
        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            # Warm-up: connections, prepared statements, template caches.
            warm: dict[str, float] = {}
            await asyncio.gather(*(create(http, url, body, warm) for _ in range(20)))
            await wait_for_mail(sink, 20)
            sink.messages.clear()

            # 1. steady rate, open loop
            total = int(args.rate * args.duration)
            answered: dict[str, float] = {}
            tasks = []
            start = time.monotonic()
            for i in range(total):
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(create(http, url, body, answered)))
            await asyncio.gather(*tasks)
            await wait_for_mail(sink, total)
            await asyncio.sleep(1)  # would a duplicate follow?
            latencies = []
            seen: set[str] = set()
            for message in sink.messages:
                link = message.link()
                if link is None or link not in answered or link in seen:
                    raise RuntimeError(f"unexpected or duplicate email for {link}")
                seen.add(link)
                latencies.append((message.at - answered[link]) * 1000)
            if len(seen) != total:
                raise RuntimeError(f"{total} creates, {len(seen)} emails")
            steady_p50, steady_p99 = pct(latencies, 0.5), pct(latencies, 0.99)
            steady_max = max(latencies)
            sink.messages.clear()

            # 2. saturation
            burst: dict[str, float] = {}
            sem = asyncio.Semaphore(32)

            async def one() -> None:
                async with sem:
                    await create(http, url, body, burst)

            first = time.monotonic()
            await asyncio.gather(*(one() for _ in range(args.burst)))
            created_at = time.monotonic()
            await wait_for_mail(sink, args.burst, timeout=300)
            last = max(m.at for m in sink.messages)
        print(
            f"\nsteady: {args.rate:g} creates/s with send_email for {args.duration:g} s "
            f"({total} emails, each exactly once)"
        )
        print(
            f"  201 -> SMTP accepted: p50 {steady_p50:.0f} ms, p99 {steady_p99:.0f} ms, "
            f"max {steady_max:.0f} ms  (goal: p99 < 1000 ms)"
        )
        print(
            f"saturation: {args.burst} creates in {created_at - first:.1f} s "
            f"({args.burst / (created_at - first):.0f} creates/s); last email after "
            f"{last - first:.1f} s: {args.burst / (last - first):.0f} emails/s"
        )
    finally:
        for proc in procs:
            proc.terminate()
        # In a thread: the sink on this loop must keep answering their QUITs.
        for proc in procs:
            await asyncio.to_thread(proc.wait, 15)
        await sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    piece = create_slice()
    try:
        uvloop.run(run(args, piece))
    finally:
        destroy_slice(piece)


if __name__ == "__main__":
    main()
