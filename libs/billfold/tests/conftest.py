"""Fixtures for the bus and outbox tests: per-test exchange, schema and AMQP helpers.

Each test gets its own topic exchange (so no other test's publishes reach its queues),
its own Postgres schema holding an outbox exactly like a service's migration creates,
and queues named at random that are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aio_pika
import aio_pika.abc
import asyncpg
import pytest
import pytest_asyncio

from billfold.events import PortalSessionUsed
from billfold.settings import Settings

OUTBOX_DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.outbox (
    id             bigserial PRIMARY KEY,
    event_id       text NOT NULL UNIQUE,
    routing_key    text NOT NULL,
    ordering_key   text,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error     text
);
CREATE INDEX outbox_pending_idx ON {s}.outbox (next_attempt_at, id);
CREATE INDEX outbox_ordering_idx ON {s}.outbox (ordering_key, id);
CREATE TABLE {s}.processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
-- What a handler "did": not unique on purpose, so a double effect would show.
CREATE TABLE {s}.effects (
    event_id   text NOT NULL,
    request_id text,
    seq        integer
);
"""


def rand(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def session_event(
    key: str = "ps_1", seq: int = 0, request_id: str | None = None
) -> PortalSessionUsed:
    """A ``portal_session.used`` event; ``seq`` rides in the (extensible) data."""
    return PortalSessionUsed.model_validate(
        {
            "site_id": "site_test",
            "request_id": request_id,
            "data": {
                "session_id": key,
                "customer_id": "cus_test",
                "expires_at": datetime.now(UTC) + timedelta(hours=1),
                "seq": seq,
            },
        }
    )


@pytest_asyncio.fixture
async def settings(bf_settings: Settings) -> Settings:
    """The slice's settings with an exchange of this test's own."""
    return bf_settings.model_copy(update={"exchange": rand("test.events"), "delivery_limit": 3})


@pytest_asyncio.fixture
async def schema(db_pool: asyncpg.Pool) -> AsyncIterator[str]:
    name = rand("test_outbox")
    await db_pool.execute(OUTBOX_DDL.format(s=name))
    try:
        yield name
    finally:
        await db_pool.execute(f"DROP SCHEMA {name} CASCADE")


@dataclass
class Amqp:
    """A plain aio-pika connection on the real broker port, for inspecting queues."""

    connection: aio_pika.abc.AbstractRobustConnection
    channel: aio_pika.abc.AbstractChannel
    exchange_name: str
    queues: list[str] = field(default_factory=list)
    # message id -> time.monotonic() when drain() first received it
    arrivals: dict[str, float] = field(default_factory=dict)

    async def queue(self, routing_key: str = "portal_session.*") -> aio_pika.abc.AbstractQueue:
        """A classic, exclusive-to-this-test queue bound to the test exchange."""
        exchange = await self.channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self.channel.declare_queue(rand("test.raw"), durable=True)
        await queue.bind(exchange, routing_key)
        self.queues.append(queue.name)
        return queue

    async def count(self, name: str) -> int:
        """Ready messages in ``name``, from a fresh passive declare (a channel that already
        declared the queue may answer from aio-pika's cache)."""
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            count = queue.declaration_result.message_count
        finally:
            await channel.close()
        assert count is not None
        return count

    async def drain(
        self,
        queue: aio_pika.abc.AbstractQueue,
        *,
        want: int,
        timeout: float = 10.0,
        settle: float = 0.3,
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Read until ``want`` messages arrived and nothing more came for ``settle`` s."""
        got: list[aio_pika.abc.AbstractIncomingMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with queue.iterator() as it:
            while loop.time() < deadline:
                wait = settle if len(got) >= want else max(0.01, deadline - loop.time())
                try:
                    message = await asyncio.wait_for(it.__anext__(), wait)
                except TimeoutError:
                    if len(got) >= want:
                        break
                    continue
                self.arrivals.setdefault(str(message.message_id), loop.time())
                await message.ack()
                got.append(message)
        return got


@pytest_asyncio.fixture
async def amqp(settings: Settings) -> AsyncIterator[Amqp]:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    channel = await connection.channel()
    helper = Amqp(connection, channel, settings.exchange)
    try:
        yield helper
    finally:
        cleanup = await connection.channel()
        for name in helper.queues:
            await cleanup.queue_delete(name)
        await cleanup.exchange_delete(settings.exchange)
        await connection.close()


async def _eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.05
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


Eventually = Callable[..., Awaitable[None]]
MakeEvent = Callable[..., PortalSessionUsed]


# Helpers are handed out as fixtures: with --import-mode=importlib a test module cannot
# import this conftest by name.
@pytest.fixture
def eventually() -> Eventually:
    return _eventually


@pytest.fixture
def make_event() -> MakeEvent:
    return session_event


@pytest.fixture
def rand_name() -> Callable[[str], str]:
    return rand
