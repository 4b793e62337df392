"""Helpers for the sign-in tests: a portal with a chosen sign-in policy, customers that
share an email, and the code as the notifier would read it (opened from the sealed
``login.code_requested`` in portal-web's outbox with the run's notifier key)."""

from __future__ import annotations

import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
from aiohttp.test_utils import TestClient

from billfold import sealing
from billfold.bus import Bus
from billfold.events import LoginCodeRequested, parse_event
from billfold.settings import Settings
from billfold_testing.smtp_sink import Received, SmtpSink
from billfold_testing.waiting import eventually
from portal_web.app import create_app as create_portal
from portal_web.sign_in_limits import SIGN_IN_POLICY, Policy
from session_api.customers import repository as customers

from .conftest import Tenant

Client = TestClient[Any, Any]

# A browser posting our own form says so (Sec-Fetch-Site); the test client does too.
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


async def portal_with(
    aiohttp_client: Callable[..., Any], settings: Settings, policy: Policy | None = None
) -> Client:
    app = create_portal(settings)
    app[SIGN_IN_POLICY] = policy or Policy(per_email="50/minute", per_ip="1000/minute")
    client: Client = await aiohttp_client(app)
    return client


async def add_customer(
    pool: asyncpg.Pool, site_id: str, email: str, name: str, external_id: str | None = None
) -> str:
    async with pool.acquire() as conn:
        customer = await customers.upsert(
            conn,
            site_id,
            external_id=external_id or f"ext-{secrets.token_hex(3)}",
            email=email,
            name=name,
            stripe_id=f"cus_{secrets.token_hex(6)}",
        )
    return customer.id


async def ask_code(portal: Client, tenant: Tenant, email: str, **form: str) -> str:
    """POST the email form; returns the login request id from the redirect."""
    resp = await portal.post(
        f"/s/{tenant.slug}",
        data={"email": email, **form},
        headers=SAME_ORIGIN,
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    match = re.search(r"[?&]r=(lr_[0-9a-f]+)", resp.headers["Location"])
    assert match, resp.headers["Location"]
    return match.group(1)


class CodeWatch:
    """Every ``login.code_requested`` on the bus, by login request id (a queue of the
    test's own, as the notifier has one)."""

    def __init__(self) -> None:
        self.events: dict[str, bytes] = {}

    async def code(self, request_id: str, private_key: str) -> str:
        """The code of ``request_id`` once sent, opened as the notifier would."""
        await eventually(lambda: request_id in self.events)
        event = parse_event(self.events[request_id])
        assert isinstance(event, LoginCodeRequested)
        assert event.data.sealed_code
        return sealing.open_sealed(private_key, event.data.sealed_code)


@contextlib.asynccontextmanager
async def watching_codes(settings: Settings) -> AsyncIterator[CodeWatch]:
    watch = CodeWatch()
    connection = await aio_pika.connect(settings.amqp_url)
    bus = await Bus.connect(settings, name="portal-web-test-codes")
    try:
        channel = await connection.channel()
        name = f"test.signin.{uuid.uuid4().hex}"
        queue = await bus.declare_queue(name, ["login.code_requested"], channel=channel)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                event = parse_event(message.body)
                if isinstance(event, LoginCodeRequested):
                    watch.events[event.data.attempt_id] = message.body

        await queue.consume(on_message)
        yield watch
        await channel.queue_delete(name)
        await channel.queue_delete(f"{name}.dlq")
    finally:
        await bus.close()
        await connection.close()


async def send_code(portal: Client, tenant: Tenant, request_id: str, code: str) -> Any:
    return await portal.post(
        f"/s/{tenant.slug}/code",
        data={"r": request_id, "code": code},
        headers=SAME_ORIGIN,
        allow_redirects=False,
    )


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


CODE = re.compile(r"\b(\d{6})\b")


def mails(sink: SmtpSink, email: str, tenant: Tenant) -> list[Received]:
    """This site's mails to ``email``: codes other tests asked for (queued for the
    notifier while none ran) may reach this sink too, for other sites."""
    return [m for m in sink.to(email) if tenant.name in m.subject]


async def emailed_code(sink: SmtpSink, email: str, tenant: Tenant, count: int = 1) -> str:
    """The code in the ``count``-th mail of this site to ``email``, as the customer
    reads it."""
    await eventually(lambda: len(mails(sink, email, tenant)) >= count)
    match = CODE.search(mails(sink, email, tenant)[count - 1].part("plain"))
    assert match, mails(sink, email, tenant)[count - 1].part("plain")
    return match.group(1)
