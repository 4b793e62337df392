"""Fixtures for the bus and outbox tests: per-test exchange, schema and AMQP helpers.

Each test gets its own topic exchange (so no other test's publishes reach its queues),
its own Postgres schema holding an outbox exactly like a service's migration creates,
and queues named at random that are deleted afterwards.

The helpers a test needs (``Tables``, ``Consumers``, ``Relays``, a cuttable link to the
broker) are handed out as fixtures too, so that each test reads as its scenario.

Every test leaves logging as it found it (``_bf_logging_restored`` in the
billfold_testing plugin).
"""

# The schema in these f-strings is the test's own random identifier, never input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import asyncpg
import pytest
import pytest_asyncio
import structlog

from billfold.bus import Bus
from billfold.events import Event, PortalSessionUsed
from billfold.outbox import OutboxRelay, enqueue, outbox_ddl
from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy
from billfold_testing.waiting import eventually as _eventually


def _test_schema_ddl(schema: str) -> str:
    """A schema with an outbox exactly as a service's migration makes it, plus effects."""
    return (
        f"CREATE SCHEMA {schema};"
        + outbox_ddl(schema)
        # What a handler "did": not unique on purpose, so a double effect would show.
        + f"CREATE TABLE {schema}.effects (event_id text NOT NULL, request_id text, seq integer);"
    )


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
    await db_pool.execute(_test_schema_ddl(name))
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

    def quorum_queue_name(self) -> str:
        """A fresh name for a queue ``Bus`` declares (quorum, with its ``.dlq``); both are
        deleted after the test."""
        name = rand("test.q")
        self.queues += [name, f"{name}.dlq"]
        return name

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

    async def drain_ids(
        self, queue: aio_pika.abc.AbstractQueue, **options: Any
    ) -> list[str | None]:
        """:meth:`drain` (same options), answering the messages' ids in arrival order."""
        return [m.message_id for m in await self.drain(queue, **options)]


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


MakeEvent = Callable[..., PortalSessionUsed]


# Helpers are handed out as fixtures: with --import-mode=importlib a test module cannot
# import this conftest by name.


@pytest.fixture
def make_event() -> MakeEvent:
    return session_event


@pytest.fixture
def rand_name() -> Callable[[str], str]:
    return rand


# --- the test schema's tables ------------------------------------------------------------


@dataclass
class Tables:
    """The test schema's outbox, effects and processed_events, as the tests use them."""

    pool: asyncpg.Pool
    schema: str

    async def enqueue(self, events: Sequence[tuple[Event, str | None]]) -> None:
        """Enqueue ``(event, ordering_key)`` pairs in one transaction, as a producer does."""
        async with self.pool.acquire() as conn, conn.transaction():
            for event, key in events:
                await enqueue(conn, self.schema, event, ordering_key=key)

    async def outbox_rows(self) -> int:
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {self.schema}.outbox"))

    async def outbox_empty(self) -> bool:
        return await self.outbox_rows() == 0

    async def effects(self) -> list[str]:
        """The event ids handlers applied, in order (a double effect shows twice)."""
        rows = await self.pool.fetch(f"SELECT event_id FROM {self.schema}.effects")
        return [r["event_id"] for r in rows]

    async def effects_are(self, *expected: str) -> bool:
        """For ``eventually``: the effects are exactly ``expected``, in that order."""
        return await self.effects() == list(expected)

    async def outbox_row(self, event_id: str) -> asyncpg.Record | None:
        """An event's outbox row: its ``attempts`` and ``last_error`` so far."""
        return await self.pool.fetchrow(
            f"SELECT attempts, last_error FROM {self.schema}.outbox WHERE event_id = $1",
            event_id,
        )

    async def processed(self) -> int:
        """Rows of processed_events (the consumers' dedupe records)."""
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {self.schema}.processed_events"))


@pytest.fixture
def tables(db_pool: asyncpg.Pool, schema: str) -> Tables:
    return Tables(db_pool, schema)


# --- the bus and its consumers -------------------------------------------------------------


@pytest_asyncio.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    bus = await Bus.connect(settings, name="test-bus")
    try:
        yield bus
    finally:
        await bus.close()


def recorder(schema: str, seen: list[dict[str, Any]], fail_times: int = 0) -> Any:
    """A handler that writes its effect in the message's transaction; fails N times first."""
    failures = {"left": fail_times}

    async def handle(event: Event, conn: asyncpg.Connection) -> None:
        seen.append({"id": event.id, "context": dict(structlog.contextvars.get_contextvars())})
        await conn.execute(
            f"INSERT INTO {schema}.effects (event_id, request_id) VALUES ($1, $2)",
            event.id,
            structlog.contextvars.get_contextvars().get("request_id"),
        )
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("handler failed on purpose")

    return handle


@dataclass
class Consumers:
    """Starts ``Bus.consume`` consumers on fresh quorum queues bound to
    ``portal_session.*``; their handler is a :func:`recorder` appending to ``seen``."""

    bus: Bus
    amqp: Amqp
    tables: Tables
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def start(
        self,
        *,
        consumer: str = "test",
        fail_times: int = 0,
        pool: asyncpg.Pool | None = None,
        **options: Any,
    ) -> str:
        """Consume on a new queue (through ``pool``, the test's pool by default); returns
        the queue's name."""
        queue = self.amqp.quorum_queue_name()
        await self.bus.consume(
            queue,
            ["portal_session.*"],
            recorder(self.tables.schema, self.seen, fail_times),
            pool=pool or self.tables.pool,
            schema=self.tables.schema,
            consumer=consumer,
            **options,
        )
        return queue


@pytest.fixture
def consumers(bus: Bus, amqp: Amqp, tables: Tables) -> Consumers:
    return Consumers(bus, amqp, tables)


# --- a broker link that can be cut ---------------------------------------------------------


class HoldingProxy(TcpProxy):
    """A :class:`TcpProxy` that can also hold back what the server sends (RabbitMQ's
    publisher confirms): a publish then provably stays in flight until the test cuts
    the link or lets the replies through."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._replies = asyncio.Event()
        self._replies.set()

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        if dst is not pair[0]:  # client to server: as TcpProxy
            await super()._pipe(src, dst, pair)
            return
        # Server to client: the same loop, waiting while replies are held.
        try:
            while data := await src.read(65536):
                await self._replies.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in pair:
                writer.transport.abort()
                self._writers.discard(writer)


@pytest_asyncio.fixture
async def amqp_proxy(settings: Settings) -> AsyncIterator[HoldingProxy]:
    """A cuttable link to RabbitMQ (that can hold the broker's replies), open at first."""
    target = urlsplit(settings.amqp_url)
    proxy = HoldingProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
def proxied(settings: Settings, amqp_proxy: TcpProxy) -> Settings:
    """``settings`` with the AMQP URL pointing through ``amqp_proxy``."""
    parts = urlsplit(settings.amqp_url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{amqp_proxy.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return settings.model_copy(update={"amqp_url": url})


# --- outbox relays -----------------------------------------------------------------------


class Relays:
    """Relays on the test schema, all stopped at the end whatever happened."""

    def __init__(self, settings: Settings, schema: str) -> None:
        self.settings = settings
        self.schema = schema
        self.all: list[OutboxRelay] = []

    def new(self, settings: Settings | None = None, **options: Any) -> OutboxRelay:
        """A relay not started (for ``run_once``); ``settings`` default to the test's."""
        relay = OutboxRelay(settings or self.settings, self.schema, **options)
        self.all.append(relay)
        return relay

    async def start(
        self, settings: Settings | None = None, *, listening: bool = False, **options: Any
    ) -> OutboxRelay:
        """A running relay; with ``listening``, once its LISTEN connection is up."""
        relay = self.new(settings, **options)
        await relay.start()
        if listening:
            await _eventually(lambda: relay.listening)
        return relay

    async def stop_all(self) -> None:
        for relay in self.all:
            await relay.stop()


@pytest_asyncio.fixture
async def relays(settings: Settings, schema: str) -> AsyncIterator[Relays]:
    relays = Relays(settings, schema)
    try:
        yield relays
    finally:
        await relays.stop_all()
