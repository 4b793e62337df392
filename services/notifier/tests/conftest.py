"""Fixtures for notifier tests: the service over the run's isolated slice, a real SMTP
server on loopback, sites and customers, and a publisher for events."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from billfold import sealing
from billfold.bus import Bus
from billfold.events import (
    LoginCodeRequested,
    LoginCodeRequestedData,
    PortalSessionCreated,
    PortalSessionData,
)
from billfold.settings import Settings
from billfold_testing.infra import Slice
from billfold_testing.logcapture import LogCapture
from billfold_testing.smtp_sink import SmtpSink
from billfold_testing.waiting import eventually
from notifier.app import CONSUMING, create_app
from notifier.settings import NotifierSettings

FAST_EMAIL_RETRIES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Keys:
    public: str
    private: str
    data: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "BILLFOLD_NOTIFIER_PUBLIC_KEY": self.public,
            "BILLFOLD_NOTIFIER_PRIVATE_KEY": self.private,
            "BILLFOLD_NOTIFIER_DATA_KEY": self.data,
        }


@pytest.fixture(scope="session")
def keys(bf_slice: Slice) -> Keys:
    # The run's pair (billfold_testing.infra), so session-api under test seals to it too.
    public = bf_slice.settings.notifier_public_key
    assert public is not None
    data = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return Keys(public, bf_slice.notifier_private_key, data)


@pytest.fixture(scope="session")
def bf_service_name() -> str:
    return "notifier"


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server = SmtpSink()
    await server.start()
    yield server
    await server.stop()


MakeSettings = Callable[..., NotifierSettings]


@pytest.fixture
def make_settings(bf_settings: Settings, keys: Keys, sink: SmtpSink) -> MakeSettings:
    def make(**overrides: Any) -> NotifierSettings:
        values: dict[str, Any] = {
            "smtp_url": sink.url,
            "notifier_private_key": keys.private,
            "notifier_data_key": keys.data,
            "email_retry_delays": FAST_EMAIL_RETRIES,
            "webhook_retry_delays": (0.05, 0.1, 0.2),
            "webhook_allow_private": True,
            "webhook_timeout": 2.0,
            "dispatch_poll": 0.5,
            "mail_from": "billing@notify.example",
        }
        values.update(overrides)
        return NotifierSettings(**values)

    return make


StartNotifier = Callable[..., Any]


@pytest.fixture
def start_notifier(
    aiohttp_client: Callable[..., Any], make_settings: MakeSettings, log_capture: LogCapture
) -> StartNotifier:
    async def start(**overrides: Any) -> TestClient[Any, Any]:
        app: web.Application = create_app(make_settings(**overrides))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        await asyncio.wait_for(app[CONSUMING].wait(), 15)
        return client

    return start


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def publisher(bf_settings: Settings) -> AsyncIterator[Bus]:
    bus = await Bus.connect(bf_settings, name="notifier-tests")
    try:
        yield bus
    finally:
        await bus.close()


@dataclass
class Person:
    id: str
    email: str
    name: str


@dataclass
class Tenant:
    site_id: str
    slug: str
    name: str
    people: list[Person]


async def make_tenant(
    pool: asyncpg.Pool,
    *,
    locale: str = "en",
    name: str | None = None,
    n_customers: int = 1,
    support_email: str | None = "help@tenant.example",
) -> Tenant:
    slug = f"n-{secrets.token_hex(5)}"
    site_id = f"site_{secrets.token_hex(12)}"
    name = name or f"Tenant {slug}"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO portal.sites (id, slug, name, primary_color, support_email, "
            "default_locale) VALUES ($1, $2, $3, '#aa3300', $4, $5)",
            site_id,
            slug,
            name,
            support_email,
            locale,
        )
        people = []
        for i in range(n_customers):
            person = Person(f"cu_{secrets.token_hex(12)}", f"{slug}-{i}@example.com", f"Ada {i}")
            await add_customer(conn, site_id, person)
            people.append(person)
    return Tenant(site_id, slug, name, people)


async def add_customer(conn: asyncpg.Connection | asyncpg.Pool, site_id: str, p: Person) -> None:
    await conn.execute(
        "INSERT INTO mirror.customers (id, site_id, email, name) VALUES ($1, $2, $3, $4)",
        p.id,
        site_id,
        p.email,
        p.name,
    )


@pytest_asyncio.fixture
async def tenant(db_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(db_pool)


def link_for(token: str | None = None) -> str:
    return f"https://portal.example/r/bfl_{token or secrets.token_urlsafe(32)}"


def session_created(
    keys: Keys,
    tenant: Tenant,
    *,
    customer: Person | None = None,
    link: str | None = None,
    locale: str | None = None,
    expires_at: datetime | None = None,
    send_email: bool = True,
) -> tuple[PortalSessionCreated, str]:
    link = link or link_for()
    who = customer or tenant.people[0]
    event = PortalSessionCreated(
        site_id=tenant.site_id,
        request_id=f"req_{secrets.token_hex(8)}",
        data=PortalSessionData(
            session_id=f"ps_{secrets.token_hex(12)}",
            customer_id=who.id,
            expires_at=expires_at or datetime.now(UTC) + timedelta(hours=1),
            send_email=send_email,
            locale=locale,
            sealed_link=sealing.seal(keys.public, link) if send_email else None,
        ),
    )
    return event, link


def code_requested(
    keys: Keys, tenant: Tenant, email: str, *, locale: str | None = None, code: str = ""
) -> tuple[LoginCodeRequested, str]:
    code = code or f"{secrets.randbelow(10**6):06d}"
    event = LoginCodeRequested(
        site_id=tenant.site_id,
        data=LoginCodeRequestedData(
            attempt_id=f"la_{secrets.token_hex(8)}",
            email=email,
            locale=locale,
            expires_at=datetime(2026, 12, 24, 15, 40, tzinfo=UTC),
            sealed_code=sealing.seal(keys.public, code),
        ),
    )
    return event, code


def billfold_cli(keys: Keys, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``billfold`` CLI in a subprocess (the slice's env is already exported)."""
    env = {**os.environ, **keys.env}
    return subprocess.run(
        [sys.executable, "-c", "from billfold.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def delivery_rows(pool: asyncpg.Pool, event_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM notify.deliveries WHERE event_id = $1", event_id)
    return [dict(r) for r in rows]


# Fixtures hand the helpers out: with --import-mode=importlib a test module cannot import
# this conftest by name.
@dataclass(frozen=True)
class Helpers:
    session_created = staticmethod(session_created)
    code_requested = staticmethod(code_requested)
    eventually = staticmethod(eventually)
    billfold_cli = staticmethod(billfold_cli)
    delivery_rows = staticmethod(delivery_rows)
    make_tenant = staticmethod(make_tenant)
    add_customer = staticmethod(add_customer)
    link_for = staticmethod(link_for)
    Person = Person


@pytest.fixture
def h() -> Helpers:
    return Helpers()
