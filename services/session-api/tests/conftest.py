"""Fixtures for session-api tests: the app over the run's isolated slice, tenants, logs.

Every test makes its own site (random slug) with its own key and customers, so tests
never see each other's data and a rerun never trips over an earlier one.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aio_pika.abc
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from billfold import tokens
from billfold.bus import Bus
from billfold.logs import configure_logging
from billfold.settings import Settings
from session_api.app import create_app
from session_api.customers import repository as customers
from session_api.keys import repository as keys
from session_api.portal_sessions import link_index
from session_api.sites import repository as sites


@dataclass
class Tenant:
    site_id: str
    slug: str
    key: str
    key_id: str
    customers: list[customers.Customer] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


TenantFactory = Callable[..., Any]


class LogCapture:
    """The JSON log lines the process wrote since ``mark()``."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self._start = 0

    def mark(self) -> None:
        self._start = len(self.stream.getvalue())

    def text(self) -> str:
        return self.stream.getvalue()[self._start :]

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def log_capture(bf_settings: Settings) -> LogCapture:
    capture = LogCapture()
    configure_logging("session-api", bf_settings, stream=capture.stream)
    return capture


@pytest.fixture
def logs(log_capture: LogCapture) -> LogCapture:
    log_capture.mark()
    return log_capture


@pytest.fixture
def app(bf_settings: Settings, log_capture: LogCapture) -> web.Application:
    return create_app(bf_settings)


@pytest_asyncio.fixture
async def client(
    aiohttp_client: Callable[..., Any], app: web.Application
) -> AsyncIterator[TestClient[Any, Any]]:
    yield await aiohttp_client(app)


async def make_tenant(
    pool: asyncpg.Pool,
    *,
    n_customers: int = 2,
    default_sections: dict[str, Any] | None = None,
    default_ttl: int | None = None,
    scopes: list[str] | None = None,
) -> Tenant:
    slug = f"t-{secrets.token_hex(5)}"
    async with pool.acquire() as conn:
        site = await sites.create(
            conn, slug=slug, name=f"Test {slug}", default_session_ttl=default_ttl
        )
        if default_sections is not None:
            await conn.execute(
                "UPDATE portal.sites SET default_sections = $2 WHERE id = $1",
                site.id,
                default_sections,
            )
        record, secret = await keys.create(conn, site.id, "secret", scopes)
        people = []
        for i in range(n_customers):
            people.append(
                await customers.upsert(
                    conn,
                    site.id,
                    external_id=f"ext-{i}",
                    email=f"c{i}@example.com",
                    name=f"Customer {i}",
                    stripe_id=f"cus_{secrets.token_hex(6)}",
                )
            )
    return Tenant(site_id=site.id, slug=slug, key=secret, key_id=record.id, customers=people)


@pytest_asyncio.fixture
async def tenant(db_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(db_pool)


@pytest_asyncio.fixture
async def other_tenant(db_pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(db_pool)


async def get_session(
    client: TestClient[Any, Any], tenant: Tenant, session_id: str
) -> dict[str, Any]:
    resp = await client.get(f"/v1/portal_sessions/{session_id}", headers=tenant.auth)
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


async def create_session(
    client: TestClient[Any, Any], tenant: Tenant, **params: Any
) -> dict[str, Any]:
    params.setdefault("customer", tenant.customers[0].id)
    resp = await client.post("/v1/portal_sessions", json=params, headers=tenant.auth)
    body = await resp.json()
    assert resp.status == 201, body
    return body  # type: ignore[no-any-return]


def assert_error(
    status: int, body: dict[str, Any], expected_status: int, code: str, param: str | None = None
) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}
    error = body["error"]
    assert {"type", "code", "message", "param"} <= set(error)
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def without_broker(settings: Settings) -> Settings:
    """``settings`` with RabbitMQ unreachable: the app serves, and every event it writes
    stays in the outbox, where a test can count it."""
    return settings.model_copy(
        update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"}
    )


def link_key(settings: Settings, token: str) -> str:
    """The Redis key under which the link index keeps the session of ``token``."""
    return link_index.key(settings, tokens.hash_token(token))


@asynccontextmanager
async def watch_events(
    settings: Settings, *, bus_name: str, queue_prefix: str
) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A fresh queue bound to ``portal_session.*`` on the real broker, removed afterwards.

    The queue (and its dead-letter queue) get a fresh name under ``queue_prefix``; the
    run's vhost goes at the end anyway.
    """
    bus = await Bus.connect(settings, name=bus_name)
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    name = f"{queue_prefix}.{uuid.uuid4().hex}"
    queue = await bus.declare_queue(name, ["portal_session.*"], channel=channel)
    try:
        yield queue
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.queue_delete(f"{name}.dlq")
        await connection.close()
        await bus.close()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def open_raw(
    client: TestClient[Any, Any],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the test server: a test controls every byte and when
    it is sent (aiohttp's client would send the whole body at once)."""
    return await asyncio.open_connection(str(client.server.host), int(client.server.port))


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader, timeout: float = 10.0) -> RawResponse:
    """One HTTP/1.1 response (Content-Length framed, as every answer of ours is)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(status_line.split()[1]), headers, body)
