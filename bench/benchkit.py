"""What the benchmark scripts share: free loopback ports, waiting for a service to
answer, percentiles. Imported by the scripts beside it (``uv run python bench/X.py``
puts this folder on ``sys.path``)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import uvloop

from billfold_testing.infra import Slice, create_slice, destroy_slice
from billfold_testing.smtp_sink import SmtpSink
from session_api.customers import repository as customers

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def wait_ready(
    url: str,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
    ready: Collection[int] = (200,),
) -> None:
    """Poll ``url`` until it answers one of the ``ready`` statuses."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers=headers) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as resp:
                    if resp.status in ready:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_for_mail(sink: SmtpSink, count: int, timeout: float = 120) -> None:
    """Until the sink holds ``count`` messages (RuntimeError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while len(sink.messages) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(sink.messages)} of {count} emails arrived")
        await asyncio.sleep(0.02)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass(frozen=True)
class Tenant:
    api_key: str
    site_id: str
    customer_id: str


async def demo_tenant(env: dict[str, str], database_url: str) -> Tenant:
    """A site and secret key from ``billfold demo`` (in the run's slice, through ``env``),
    and one mirrored customer. The customer is written the way session-api's tests stand
    in for billing-sync: these benchmarks measure session-api and the notifier, not the
    Stripe mirror, so no Stripe is needed."""
    # Set-up before any measuring starts: blocking here delays nothing measured.
    out = subprocess.run(  # noqa: ASYNC221
        [sys.executable, "-c", "from billfold.cli import main; main()", "demo"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    info = json.loads(out)
    conn = await asyncpg.connect(database_url)
    try:
        customer = await customers.upsert(
            conn,
            info["site_id"],
            external_id="bench-customer",
            email="bench-customer@example.com",
            name="Bench Customer",
        )
    finally:
        await conn.close()
    return Tenant(info["api_key"], info["site_id"], customer.id)


def spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A service or baseline process, its output discarded."""
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_in_slice(run: Callable[[Slice], Awaitable[None]]) -> None:
    """``run`` on uvloop in a slice of its own (database, vhost, Redis prefix), dropped
    afterwards whatever happens."""
    piece = create_slice()
    try:
        uvloop.run(run(piece))
    finally:
        destroy_slice(piece)
