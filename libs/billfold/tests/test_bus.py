"""Bus: publish with confirms, quorum queues with DLQ, and the dedupe-then-ack consumer.

Real RabbitMQ and Postgres (the slice's vhost and database); every test has its own
exchange, queues and schema.
"""

# The schema in these f-strings is the test's own random identifier, never input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import structlog

from billfold.bus import DLX, Bus
from billfold.db import create_pool
from billfold.events import Event
from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy


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


async def effects(pool: asyncpg.Pool, schema: str) -> list[str]:
    return [r["event_id"] for r in await pool.fetch(f"SELECT event_id FROM {schema}.effects")]


async def test_round_trip_with_request_id(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    make_event: Any,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    seen: list[dict[str, Any]] = []
    await bus.consume(
        queue,
        ["portal_session.*"],
        recorder(schema, seen),
        pool=db_pool,
        schema=schema,
        consumer="test",
    )
    event = make_event(request_id="req_round_trip")
    await bus.publish(event)

    async def handled() -> bool:
        return await effects(db_pool, schema) == [event.id]

    await eventually(handled)
    assert seen[0]["context"]["request_id"] == "req_round_trip"
    assert seen[0]["context"]["event_id"] == event.id
    # Acked after commit: once the consumer is gone (an unacked message would return to
    # the queue), nothing is left and nothing is dead.
    await bus.close()
    await asyncio.sleep(0.2)
    assert await amqp.count(queue) == 0
    assert await amqp.count(f"{queue}.dlq") == 0
    processed = await db_pool.fetchval(
        f"SELECT count(*) FROM {schema}.processed_events WHERE event_id = $1", event.id
    )
    assert processed == 1


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _processed(pool: asyncpg.Pool, schema: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {schema}.processed_events"))


async def test_queue_is_quorum_with_dead_lettering(
    bus: Bus, amqp: Any, bf_slice: Any, settings: Settings, rand_name: Callable[[str], str]
) -> None:
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    await bus.declare_queue(queue, ["portal_session.*"])
    exe = shutil.which("rabbitmqctl")
    assert exe is not None
    out = subprocess.run(
        [
            exe,
            "-q",
            "list_queues",
            "-p",
            bf_slice.name,
            "name",
            "type",
            "arguments",
            "--formatter",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    import json

    rows = {row["name"]: row for row in json.loads(out)}
    args = {a[0]: a[2] for a in rows[queue]["arguments"]}
    assert rows[queue]["type"] == "quorum"
    assert args["x-queue-type"] == "quorum"
    assert args["x-dead-letter-exchange"] == DLX
    assert args["x-dead-letter-routing-key"] == queue
    assert args["x-delivery-limit"] == settings.delivery_limit
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    assert rows[f"{queue}.dlq"]["type"] == "quorum"


async def test_poison_message_ends_in_dlq(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    make_event: Any,
    settings: Settings,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    seen: list[dict[str, Any]] = []
    await bus.consume(
        queue,
        ["portal_session.*"],
        recorder(schema, seen, fail_times=1000),
        pool=db_pool,
        schema=schema,
        consumer="test",
        retry_delay=0.01,
    )
    await bus.publish(make_event())
    await eventually(lambda: _is(amqp.count(f"{queue}.dlq"), 1), timeout=15)
    # Every attempt rolled back; the delivery limit bounded the attempts.
    assert await effects(db_pool, schema) == []
    assert settings.delivery_limit <= len(seen) <= settings.delivery_limit + 1
    assert await db_pool.fetchval(f"SELECT count(*) FROM {schema}.processed_events") == 0


async def test_unparseable_message_goes_straight_to_dlq(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    seen: list[dict[str, Any]] = []
    await bus.consume(
        queue,
        ["portal_session.*"],
        recorder(schema, seen),
        pool=db_pool,
        schema=schema,
        consumer="test",
    )
    await bus.publish_raw(
        "portal_session.used", b'{"not": "an event"', message_id="garbage", headers={}
    )
    await eventually(lambda: _is(amqp.count(f"{queue}.dlq"), 1))
    assert seen == []
    dead = await (await amqp.channel.declare_queue(f"{queue}.dlq", passive=True)).get()
    assert dead.body == b'{"not": "an event"'
    await dead.ack()


async def test_duplicate_event_is_applied_once_and_acked(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    make_event: Any,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    seen: list[dict[str, Any]] = []
    await bus.consume(
        queue,
        ["portal_session.*"],
        recorder(schema, seen),
        pool=db_pool,
        schema=schema,
        consumer="test",
    )
    event = make_event()
    await bus.publish(event)
    await bus.publish(event)
    await bus.publish(event)
    await eventually(lambda: _is(_processed(db_pool, schema), 1))
    await asyncio.sleep(0.3)
    await bus.close()  # unacked copies would return to the queue
    await asyncio.sleep(0.2)
    assert await effects(db_pool, schema) == [event.id]
    assert await amqp.count(queue) == 0
    assert await amqp.count(f"{queue}.dlq") == 0


async def test_handler_failure_is_redelivered(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    make_event: Any,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    seen: list[dict[str, Any]] = []
    await bus.consume(
        queue,
        ["portal_session.*"],
        recorder(schema, seen, fail_times=1),
        pool=db_pool,
        schema=schema,
        consumer="test",
        retry_delay=0.01,
    )
    event = make_event()
    await bus.publish(event)

    async def applied() -> bool:
        return await effects(db_pool, schema) == [event.id]

    await eventually(applied)
    assert [s["id"] for s in seen] == [event.id, event.id]  # failed once, then applied
    await eventually(lambda: _is(amqp.count(queue), 0))
    assert await amqp.count(f"{queue}.dlq") == 0


async def test_each_consumer_dedupes_on_its_own(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    make_event: Any,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    # Two services consuming the same event each apply it once: the dedupe key is
    # (consumer, event_id), not the event id alone.
    first, second = rand_name("test.q"), rand_name("test.q")
    amqp.queues += [first, f"{first}.dlq", second, f"{second}.dlq"]
    seen: list[dict[str, Any]] = []
    for queue, consumer in ((first, "notifier"), (second, "portal-web")):
        await bus.consume(
            queue,
            ["portal_session.*"],
            recorder(schema, seen),
            pool=db_pool,
            schema=schema,
            consumer=consumer,
        )
    event = make_event()
    await bus.publish(event)

    async def both() -> bool:
        return await effects(db_pool, schema) == [event.id, event.id]

    await eventually(both)


async def test_check_and_close(settings: Settings) -> None:
    bus = await Bus.connect(settings, name="test-check")
    await bus.check()
    await bus.close()
    with pytest.raises(ConnectionError):
        await bus.check()


async def test_database_outage_is_waited_out_not_dead_lettered(
    bus: Bus,
    amqp: Any,
    db_pool: asyncpg.Pool,
    schema: str,
    make_event: Any,
    bf_settings: Settings,
    settings: Settings,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    # The consumer's pool reaches Postgres through a proxy we can cut: a database outage
    # must not count against the delivery limit (3 here) and park events in the DLQ.
    parts = urlsplit(bf_settings.database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    url = urlunsplit((parts.scheme, f"{parts.username}@127.0.0.1:{proxy.port}", parts.path, "", ""))
    pool = await create_pool(
        bf_settings.model_copy(update={"database_url": url}), min_size=1, max_size=2, timeout=2
    )
    queue = rand_name("test.q")
    amqp.queues += [queue, f"{queue}.dlq"]
    seen: list[dict[str, Any]] = []
    try:
        await bus.consume(
            queue,
            ["portal_session.*"],
            recorder(schema, seen),
            pool=pool,
            schema=schema,
            consumer="test",
        )
        await proxy.cut()
        event = make_event()
        await bus.publish(event)
        await asyncio.sleep(2.5)  # several acquire attempts fail meanwhile
        assert seen == []
        assert await amqp.count(f"{queue}.dlq") == 0
        await proxy.restore()

        async def applied() -> bool:
            return await effects(db_pool, schema) == [event.id]

        await eventually(applied, timeout=15)
        assert await amqp.count(f"{queue}.dlq") == 0
    finally:
        await bus.close()
        await pool.close()
        await proxy.stop()
