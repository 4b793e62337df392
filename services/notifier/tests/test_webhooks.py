"""Tenant webhooks: signed, retried until a 2xx, logged per endpoint, never sent to
our own network."""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from billfold.events import InvoiceData, InvoiceUpdated, SubscriptionData, SubscriptionUpdated
from notifier.webhooks import endpoints, guard

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_verify() -> Any:
    """The tenant's verification function, exactly as the README shows it."""
    text = README.read_text()
    block = re.search(r"<!-- verify-snippet -->\n```python\n(.*?)```", text, re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)  # noqa: S102 - our own README's snippet
    return namespace["verify"]


class Receiver:
    """A tenant endpoint on loopback that answers with the statuses it is given."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, str]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = await aiohttp_server(app)
    return rec, f"http://127.0.0.1:{server.port}/hook"


def _allow_private(keys: Any) -> Any:
    return SimpleNamespace(env={**keys.env, "BILLFOLD_WEBHOOK_ALLOW_PRIVATE": "true"})


def _add(h: Any, keys: Any, site: str, url: str, *events: str, private: bool = True) -> Any:
    args = ["webhook", "add", "--site", site, "--url", url]
    for event in events:
        args += ["--event", event]
    return h.billfold_cli(_allow_private(keys) if private else keys, *args)


def _registered(result: Any) -> tuple[str, str]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    endpoint_id = re.search(r"endpoint (we_[0-9a-f]+)", lines[0])
    assert endpoint_id is not None
    assert lines[-1].startswith("whsec_")
    return endpoint_id.group(1), lines[-1]


def subscription_event(site_id: str) -> SubscriptionUpdated:
    return SubscriptionUpdated(
        site_id=site_id,
        data=SubscriptionData(
            subscription_id=f"sub_{secrets.token_hex(6)}",
            customer_id=f"cu_{secrets.token_hex(12)}",
            status="active",
        ),
    )


async def test_signed_post_verified_with_the_readme_snippet(
    start_notifier: Any,
    publisher: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    tenant = await h.make_tenant(db_pool)
    endpoint_id, secret = _registered(_add(h, keys, tenant.slug, url))
    # Stored encrypted, not readable.
    sealed = await db_pool.fetchval(
        "SELECT secret_sealed FROM notify.webhook_endpoints WHERE id = $1", endpoint_id
    )
    assert secret.encode() not in bytes(sealed)
    await start_notifier()
    event = subscription_event(tenant.site_id)
    await publisher.publish(event)
    await h.eventually(lambda: rec.requests)
    headers, body = rec.requests[0]
    verify = readme_verify()
    assert verify(secret, body, headers["Billfold-Signature"])
    assert not verify(secret, body + b" ", headers["Billfold-Signature"])
    assert not verify("whsec_wrong", body, headers["Billfold-Signature"])
    assert headers["Billfold-Event-Type"] == "subscription.updated"
    assert headers["Billfold-Delivery-Id"].startswith("dlv_")
    payload = json.loads(body)
    assert payload["id"] == event.id
    assert payload["type"] == "subscription.updated"
    assert payload["data"]["subscription_id"] == event.data.subscription_id


async def test_500_then_200_is_one_success_after_a_retry(
    start_notifier: Any,
    publisher: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    rec.statuses = [500, 200]
    tenant = await h.make_tenant(db_pool)
    endpoint_id, _ = _registered(_add(h, keys, tenant.slug, url))
    await start_notifier()
    event = subscription_event(tenant.site_id)
    await publisher.publish(event)

    async def sent() -> bool:
        rows = await h.delivery_rows(db_pool, event.id)
        return bool(rows) and rows[0]["status"] == "sent"

    await h.eventually(sent)
    assert len(rec.requests) == 2
    ids = {headers["Billfold-Delivery-Id"] for headers, _ in rec.requests}
    assert len(ids) == 1  # a retry, not a second delivery
    log = h.billfold_cli(keys, "webhook", "deliveries", endpoint_id)
    assert log.returncode == 0, log.stderr
    lines = log.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "\t200\t" in lines[0]  # newest first
    assert "\t500\t" in lines[1]
    assert all(line.endswith("\tsent") for line in lines)
    async with db_pool.acquire() as conn:
        attempts = await endpoints.attempts(conn, endpoint_id, 10)
    assert [a.status_code for a in attempts] == [200, 500]


async def test_event_filter_remove_and_list(
    start_notifier: Any,
    publisher: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    tenant = await h.make_tenant(db_pool)
    invoices_only, _ = _registered(_add(h, keys, tenant.slug, url, "invoice.updated"))
    listed = h.billfold_cli(keys, "webhook", "list", "--site", tenant.slug)
    assert f"{invoices_only}\t{tenant.site_id}\t{url}\tinvoice.updated" in listed.stdout
    await start_notifier()
    sub = subscription_event(tenant.site_id)
    inv = InvoiceUpdated(
        site_id=tenant.site_id, data=InvoiceData(invoice_id="in_1", customer_id="cu_1")
    )
    await publisher.publish(sub)
    await publisher.publish(inv)
    await h.eventually(lambda: rec.requests)
    assert await h.delivery_rows(db_pool, sub.id) == []
    assert [hdr["Billfold-Event-Type"] for hdr, _ in rec.requests] == ["invoice.updated"]

    removed = h.billfold_cli(keys, "webhook", "remove", invoices_only)
    assert removed.returncode == 0, removed.stderr
    assert h.billfold_cli(keys, "webhook", "list", "--site", tenant.slug).stdout == ""
    later = InvoiceUpdated(
        site_id=tenant.site_id, data=InvoiceData(invoice_id="in_2", customer_id="cu_1")
    )
    await publisher.publish(later)

    async def processed() -> bool:
        n = await db_pool.fetchval(
            "SELECT count(*) FROM notify.processed_events WHERE event_id = $1", later.id
        )
        return bool(n)

    await h.eventually(processed)
    assert await h.delivery_rows(db_pool, later.id) == []


async def test_exhausted_webhook_retries_are_dead_lettered(
    start_notifier: Any,
    publisher: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    rec.statuses = [503] * 10
    tenant = await h.make_tenant(db_pool)
    _registered(_add(h, keys, tenant.slug, url))
    await start_notifier(webhook_retry_delays=(0.02, 0.02))
    event = subscription_event(tenant.site_id)
    await publisher.publish(event)

    async def dead() -> bool:
        rows = await h.delivery_rows(db_pool, event.id)
        return bool(rows) and rows[0]["status"] == "dead"

    await h.eventually(dead)
    assert len(rec.requests) == 3
    [row] = await h.delivery_rows(db_pool, event.id)
    assert row["last_error"] == "HTTP 503"
    assert "HTTP 503" in h.billfold_cli(keys, "dlq", "list").stdout


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),  # noqa: S104 - an address to refuse, not to bind
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_forbidden_addresses(address: str, refused: bool) -> None:
    assert guard.forbidden(address) is refused


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/hook", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://localhost/hook", "resolves to a non-public address"),
        ("http://93.184.215.14/hook", "must use https"),
        ("https://user:pw@example.com/hook", "credentials"),
    ],
)
async def test_registration_refuses_private_targets(
    url: str, message: str, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    tenant = await h.make_tenant(db_pool)
    result = _add(h, keys, tenant.slug, url, private=False)
    assert result.returncode != 0
    assert message in result.stderr
    count = await db_pool.fetchval(
        "SELECT count(*) FROM notify.webhook_endpoints WHERE site_id = $1", tenant.site_id
    )
    assert count == 0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_connect_time_check_stops_rebinding(
    host: str,
    start_notifier: Any,
    publisher: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    port = url.split(":")[2].split("/")[0]
    tenant = await h.make_tenant(db_pool)
    # As if registered while the name resolved to a public address, then rebound.
    async with db_pool.acquire() as conn:
        endpoint, _ = await endpoints.add(
            conn,
            base64.urlsafe_b64decode(keys.data),
            tenant.site_id,
            f"https://{host}:{port}/hook",
            [],
        )
    await start_notifier(webhook_allow_private=False, webhook_retry_delays=(0.02,))
    event = subscription_event(tenant.site_id)
    await publisher.publish(event)

    async def dead() -> bool:
        rows = await h.delivery_rows(db_pool, event.id)
        return bool(rows) and rows[0]["status"] == "dead"

    await h.eventually(dead)
    assert rec.requests == []
    async with db_pool.acquire() as conn:
        attempts = await endpoints.attempts(conn, endpoint.id, 10)
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.status_code is None
        assert attempt.error is not None
        assert "non-public address" in attempt.error or "not a public address" in attempt.error
