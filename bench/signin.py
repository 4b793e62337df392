"""Sign-in code latency: from "email me a code" to the email accepted by SMTP.

    uv run python bench/signin.py [--rate 20] [--duration 30]

It makes an isolated database, vhost and Redis prefix (as the tests do), a site with
``rate * duration`` customers (one email each, so the per-email limit never applies;
the per-IP limit is raised through ``BILLFOLD_SIGN_IN_PER_IP`` since every request
comes from 127.0.0.1), starts the real portal-web and notifier (``python -m …``) as
separate processes and an SMTP sink (aiosmtpd) in this one, then sends ``POST
/s/{site}`` at ``--rate`` per second, open loop, for ``--duration`` seconds. Each email
is matched to its request by recipient; p50/p99 of "303 received -> message accepted
by the sink" are printed (goal: p99 < 2 s at 20/s), with the requests' own latency.

Bare baseline: the same number of messages sent straight to the same sink over SMTP
(aiosmtplib) at the same rate, request -> accepted; the ratio says what the whole path
(rate limits, row, resolver, outbox, RabbitMQ, notifier, rendering) costs on top of
SMTP itself. Every request must produce exactly one email; the script fails otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sys
import time
from collections.abc import Callable, Coroutine
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
import asyncpg
import uvloop
from benchkit import free_port, pct, spawn, wait_for_mail, wait_ready

from billfold_testing.infra import Slice, create_slice, destroy_slice
from billfold_testing.smtp_sink import SmtpSink
from session_api.customers import repository as customers
from session_api.sites import repository as sites


async def make_site(database_url: str, count: int) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        slug = f"bench-{secrets.token_hex(4)}"
        site = await sites.create(conn, slug=slug, name="Bench Inc")
        emails = [f"customer{i}@bench.example" for i in range(count)]
        for i, email in enumerate(emails):
            await customers.upsert(
                conn, site.id, external_id=f"b{i}", email=email, name=f"Customer {i}",
                stripe_id=f"cus_bench{i}",
            )  # fmt: skip
    finally:
        await conn.close()
    return slug, emails


async def open_loop(
    rate: float, emails: list[str], send: Callable[[str], Coroutine[Any, Any, None]]
) -> None:
    tasks = []
    start = time.monotonic()
    for i, email in enumerate(emails):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(email)))
    await asyncio.gather(*tasks)


def latencies(sink: SmtpSink, sent: dict[str, float]) -> list[float]:
    seen: set[str] = set()
    out = []
    for message in sink.messages:
        (to,) = message.recipients
        if to not in sent or to in seen:
            raise RuntimeError(f"unexpected or duplicate email to {to}")
        seen.add(to)
        out.append((message.at - sent[to]) * 1000)
    if len(seen) != len(sent):
        raise RuntimeError(f"{len(sent)} requests, {len(seen)} emails")
    return out


async def bare(sink: SmtpSink, port: int, rate: float, emails: list[str]) -> list[float]:
    sent: dict[str, float] = {}

    async def send(email: str) -> None:
        msg = EmailMessage()
        msg["From"] = "billing@bench.example"
        msg["To"] = email
        msg["Subject"] = "Your sign-in code"
        msg.set_content("Your code: 123456")
        sent[email] = time.monotonic()
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port)

    await open_loop(rate, emails, send)
    await wait_for_mail(sink, len(emails))
    return latencies(sink, sent)


async def run(args: argparse.Namespace, piece: Slice) -> None:
    sink = SmtpSink()
    smtp_port = await sink.start()
    total = int(args.rate * args.duration)
    env = {
        **os.environ,
        **piece.env,
        "BILLFOLD_LOG_LEVEL": "warning",
        "BILLFOLD_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "BILLFOLD_NOTIFIER_DATA_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "BILLFOLD_SIGN_IN_PER_IP": "100000/minute",
    }
    slug, emails = await make_site(piece.settings.database_url, total + 20)
    warm, measured = emails[:20], emails[20:]
    portal_port, notifier_port = free_port(), free_port()
    procs = [
        spawn(
            [sys.executable, "-m", "portal_web"],
            {**env, "BILLFOLD_PORTAL_WEB_PORT": str(portal_port)},
        ),
        spawn(
            [sys.executable, "-m", "notifier"],
            {**env, "BILLFOLD_NOTIFIER_PORT": str(notifier_port)},
        ),
    ]
    try:
        await wait_ready(f"http://127.0.0.1:{portal_port}/readyz")
        await wait_ready(f"http://127.0.0.1:{notifier_port}/readyz")
        url = f"http://127.0.0.1:{portal_port}/s/{slug}"
        sent: dict[str, float] = {}
        answer_ms: list[float] = []
        headers = {"Sec-Fetch-Site": "same-origin"}
        async with aiohttp.ClientSession(headers=headers) as http:

            async def ask(email: str) -> None:
                start = time.monotonic()
                async with http.post(url, data={"email": email}, allow_redirects=False) as r:
                    await r.read()
                    if r.status != 303:
                        raise RuntimeError(f"request failed: {r.status}")
                now = time.monotonic()
                sent[email] = now
                answer_ms.append((now - start) * 1000)

            await asyncio.gather(*(ask(e) for e in warm))
            await wait_for_mail(sink, len(warm))
            sink.messages.clear()
            sent.clear()
            answer_ms.clear()
            await open_loop(args.rate, measured, ask)
            await wait_for_mail(sink, total)
            await asyncio.sleep(1)  # would a duplicate follow?
            full = latencies(sink, sent)
        sink.messages.clear()
        base = await bare(
            sink, smtp_port, args.rate, [f"bare{i}@bench.example" for i in range(total)]
        )
        p99, bare_p99 = pct(full, 0.99), pct(base, 0.99)
        print(
            f"\n{args.rate:g} code requests/s for {args.duration:g} s ({total} emails, each once)"
        )
        print(
            f"  request -> 303:            p50 {pct(answer_ms, 0.5):.0f} ms, "
            f"p99 {pct(answer_ms, 0.99):.0f} ms"
        )
        print(
            f"  303 -> SMTP accepted:      p50 {pct(full, 0.5):.0f} ms, p99 {p99:.0f} ms, "
            f"max {max(full):.0f} ms  (goal: p99 < 2000 ms)"
        )
        print(f"  bare SMTP send -> accepted: p50 {pct(base, 0.5):.0f} ms, p99 {bare_p99:.0f} ms")
        print(f"  ratio p99 sign-in / bare SMTP: {p99 / bare_p99:.1f}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.to_thread(proc.wait, 15)
        await sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=30)
    args = parser.parse_args()
    piece = create_slice()
    try:
        uvloop.run(run(args, piece))
    finally:
        destroy_slice(piece)


if __name__ == "__main__":
    main()
