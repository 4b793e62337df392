"""Bus: publish with confirms, quorum queues with DLQ, and the dedupe-then-ack consumer.

Real RabbitMQ and Postgres (the slice's vhost and database); every test has its own
exchange, queues and schema.
"""

# The schema in these f-strings is the test's own random identifier, never input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aiohttp import web

from billfold import bus as bus_module
from billfold.bus import BUS, DLX, Bus, bus_context
from billfold.db import create_pool
from billfold.events import dump_event
from billfold.outbox import relay_context
from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy


async def test_round_trip_with_request_id(
    bus: Bus, amqp: Any, consumers: Any, tables: Any, make_event: Any, eventually: Any
) -> None:
    queue = await consumers.start()
    event = make_event(request_id="req_round_trip")
    await bus.publish(event)

    await eventually(lambda: tables.effects_are(event.id))
    seen = consumers.seen
    assert seen[0]["context"]["request_id"] == "req_round_trip"
    assert seen[0]["context"]["event_id"] == event.id
    # Acked (that it is acked only after the commit is the next test's): once the
    # consumer is gone (an unacked message would return to the queue), nothing is left
    # and nothing is dead.
    await bus.close()
    await asyncio.sleep(0.2)
    assert await amqp.count(queue) == 0
    assert await amqp.count(f"{queue}.dlq") == 0
    processed = await tables.pool.fetchval(
        f"SELECT count(*) FROM {tables.schema}.processed_events WHERE event_id = $1", event.id
    )
    assert processed == 1


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_message_is_acked_only_once_its_transaction_committed(
    bus: Bus, amqp: Any, bf_slice: Any, tables: Any, make_event: Any, eventually: Any
) -> None:
    # The handler's transaction cannot commit while the test holds a conflicting row of
    # a deferred unique constraint (checked at COMMIT, which then waits for us). So the
    # handler has returned, the commit is pending, and the message must still be unacked.
    schema, pool = tables.schema, tables.pool
    await pool.execute(
        f"CREATE TABLE {schema}.gate (k text, "
        "CONSTRAINT gate_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)"
    )
    pids: list[int] = []

    async def handle(event: Any, conn: Any) -> None:
        await conn.execute(f"INSERT INTO {schema}.effects (event_id) VALUES ($1)", event.id)
        await conn.execute(f"INSERT INTO {schema}.gate (k) VALUES ('k')")
        pids.append(conn.get_server_pid())

    queue = amqp.quorum_queue_name()
    async with pool.acquire() as holder:
        blocker = holder.transaction()
        await blocker.start()
        try:
            await holder.execute(f"INSERT INTO {schema}.gate (k) VALUES ('k')")
            await bus.consume(
                queue, ["portal_session.*"], handle, pool=pool, schema=schema, consumer="t"
            )
            event = make_event()
            await bus.publish(event)

            async def commit_waits() -> bool:
                return (
                    bool(pids)
                    and await pool.fetchval(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pids[0]
                    )
                    == "Lock"
                )

            await eventually(commit_waits, timeout=10)
            assert await tables.effects() == []  # not committed …
            # … and not acked (the broker's counters lag a little: wait for them).
            await eventually(lambda: _is(_queue_counts(bf_slice.name, queue), (0, 1)), timeout=15)
            assert await tables.effects() == []  # still held
        finally:
            await blocker.rollback()
    await eventually(lambda: tables.effects_are(event.id))
    # Committed: now the ack follows (ready 0, unacked 0), and nothing was redelivered.
    await eventually(lambda: _is(_queue_counts(bf_slice.name, queue), (0, 0)), timeout=15)
    assert pids == [pids[0]]


async def _queue_counts(vhost: str, queue: str) -> tuple[int, int]:
    """(ready, unacked) messages of ``queue`` as the broker counts them."""
    exe = shutil.which("rabbitmqctl")
    assert exe is not None
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-q",
        "list_queues",
        "-p",
        vhost,
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--formatter",
        "json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    row = next(r for r in json.loads(out) if r["name"] == queue)
    return int(row["messages_ready"]), int(row["messages_unacknowledged"])


async def test_a_message_header_request_id_is_used_only_if_short_and_plain(
    bus: Bus, consumers: Any, tables: Any, make_event: Any, eventually: Any
) -> None:
    await consumers.start()
    for header in ("x" * 65, "has space", "ok-id.1:2_3"):
        event = make_event()
        await bus.publish_raw(
            event.routing_key,
            dump_event(event),
            message_id=event.id,
            headers={"x-request-id": header},
        )
        await eventually(lambda: len(consumers.seen) == 1)
        (seen,) = consumers.seen
        consumers.seen.clear()
        expected = header if header == "ok-id.1:2_3" else None
        assert seen["context"].get("request_id") == expected, header


async def test_queue_is_quorum_with_dead_lettering(
    bus: Bus, amqp: Any, bf_slice: Any, settings: Settings
) -> None:
    queue = amqp.quorum_queue_name()
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
    consumers: Any,
    tables: Any,
    make_event: Any,
    settings: Settings,
    eventually: Any,
) -> None:
    queue = await consumers.start(fail_times=1000, retry_delay=0.01)
    await bus.publish(make_event())
    await eventually(lambda: _is(amqp.count(f"{queue}.dlq"), 1), timeout=15)
    # Every attempt rolled back; the delivery limit bounded the attempts.
    assert await tables.effects() == []
    assert settings.delivery_limit <= len(consumers.seen) <= settings.delivery_limit + 1
    assert await tables.processed() == 0


async def test_unparseable_message_goes_straight_to_dlq(
    bus: Bus, amqp: Any, consumers: Any, eventually: Any
) -> None:
    queue = await consumers.start()
    await bus.publish_raw(
        "portal_session.used", b'{"not": "an event"', message_id="garbage", headers={}
    )
    await eventually(lambda: _is(amqp.count(f"{queue}.dlq"), 1))
    assert consumers.seen == []
    dead = await (await amqp.channel.declare_queue(f"{queue}.dlq", passive=True)).get()
    assert dead.body == b'{"not": "an event"'
    await dead.ack()


async def test_duplicate_event_is_applied_once_and_acked(
    bus: Bus, amqp: Any, consumers: Any, tables: Any, make_event: Any, eventually: Any
) -> None:
    queue = await consumers.start()
    event = make_event()
    await bus.publish(event)
    await bus.publish(event)
    await bus.publish(event)
    await eventually(lambda: _is(tables.processed(), 1))
    await asyncio.sleep(0.3)
    await bus.close()  # unacked copies would return to the queue
    await asyncio.sleep(0.2)
    assert await tables.effects() == [event.id]
    assert await amqp.count(queue) == 0
    assert await amqp.count(f"{queue}.dlq") == 0


async def test_handler_failure_is_redelivered(
    bus: Bus, amqp: Any, consumers: Any, tables: Any, make_event: Any, eventually: Any
) -> None:
    queue = await consumers.start(fail_times=1, retry_delay=0.01)
    event = make_event()
    await bus.publish(event)

    await eventually(lambda: tables.effects_are(event.id))
    assert [s["id"] for s in consumers.seen] == [event.id, event.id]  # failed once, then applied
    await eventually(lambda: _is(amqp.count(queue), 0))
    assert await amqp.count(f"{queue}.dlq") == 0


async def test_each_consumer_dedupes_on_its_own(
    bus: Bus, consumers: Any, tables: Any, make_event: Any, eventually: Any
) -> None:
    # Two services consuming the same event each apply it once: the dedupe key is
    # (consumer, event_id), not the event id alone.
    for consumer in ("notifier", "portal-web"):
        await consumers.start(consumer=consumer)
    event = make_event()
    await bus.publish(event)

    await eventually(lambda: tables.effects_are(event.id, event.id))


async def test_check_and_close(settings: Settings) -> None:
    bus = await Bus.connect(settings, name="test-check")
    await bus.check()
    await bus.close()
    with pytest.raises(ConnectionError):
        await bus.check()


async def test_database_outage_is_waited_out_not_dead_lettered(
    bus: Bus,
    amqp: Any,
    consumers: Any,
    tables: Any,
    make_event: Any,
    bf_settings: Settings,
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
    try:
        queue = await consumers.start(pool=pool)
        await proxy.cut()
        event = make_event()
        await bus.publish(event)
        await asyncio.sleep(2.5)  # several acquire attempts fail meanwhile
        assert consumers.seen == []
        assert await amqp.count(f"{queue}.dlq") == 0
        await proxy.restore()

        await eventually(lambda: tables.effects_are(event.id), timeout=15)
        assert await amqp.count(f"{queue}.dlq") == 0
    finally:
        await bus.close()
        await pool.close()
        await proxy.stop()


# --- connecting in the background (Bus.start, bus_context) ---------------------------


class _BusLog:
    """Stands in for ``billfold.bus.log``: records (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return record

    def events(self, *levels: str) -> list[str]:
        return [event for level, event, _ in self.lines if level in levels]


@pytest.fixture
def bus_log(monkeypatch: pytest.MonkeyPatch) -> _BusLog:
    recorder = _BusLog()
    monkeypatch.setattr(bus_module, "log", recorder)
    return recorder


async def test_start_connects_at_once_when_the_broker_answers(
    settings: Settings, amqp: Any, make_event: Any, bus_log: _BusLog
) -> None:
    bus = await Bus.start(settings, name="test-start")
    try:
        assert bus.connected
        await bus.check()
        await bus.wait_connected(timeout=0.1)
        queue = await amqp.queue()
        event = make_event()
        await bus.publish(event)
        assert await amqp.drain_ids(queue, want=1, timeout=5) == [event.id]
        assert bus_log.lines == []  # a start that connects at once is as quiet as connect()
    finally:
        await bus.close()


async def test_start_with_the_broker_down_connects_once_it_returns(
    proxied: Settings,
    amqp: Any,
    amqp_proxy: TcpProxy,
    make_event: Any,
    bus_log: _BusLog,
    rand_name: Callable[[str], str],
    eventually: Any,
) -> None:
    await amqp_proxy.cut()
    loop = asyncio.get_running_loop()
    began = loop.time()
    bus = await Bus.start(proxied, name="test-start-down", max_backoff=0.5)
    try:
        assert loop.time() - began < 2  # refused at once: start-up does not wait it out
        assert not bus.connected
        # Everything that needs the broker says so at once, with a ConnectionError.
        with pytest.raises(ConnectionError, match="amqp connection is not connected yet"):
            await bus.check()
        began = loop.time()
        with pytest.raises(ConnectionError, match="not connected yet"):
            await bus.publish(make_event())
        with pytest.raises(ConnectionError, match="not connected yet"):
            await bus.publish_raw("portal_session.used", b"{}", message_id="m1", headers={})
        assert loop.time() - began < 0.5
        with pytest.raises(ConnectionError):
            await bus.declare_queue(rand_name("test.q"), ["portal_session.*"])
        with pytest.raises(TimeoutError):
            await bus.wait_connected(timeout=1.5)  # several retries fail meanwhile
        assert bus_log.events("warning") == ["bus_connect_failed"]  # one per outage
        assert bus_log.events("info") == []

        await amqp_proxy.restore()
        await bus.wait_connected(timeout=10)
        assert bus.connected
        await bus.check()
        assert bus_log.events("warning", "info", "error") == ["bus_connect_failed", "bus_connected"]
        queue = await amqp.queue()
        event = make_event()
        await bus.publish(event)
        assert await amqp.drain_ids(queue, want=1, timeout=5) == [event.id]

        # From then on it is the robust connection of connect(): it survives an outage.
        await amqp_proxy.cut()

        await eventually(lambda: not bus.connected, timeout=5)
        with pytest.raises(ConnectionError, match="amqp connection is down"):
            await bus.check()
        await amqp_proxy.restore()

        await eventually(lambda: bus.connected, timeout=15)
        event = make_event()
        await bus.publish(event)
        assert await amqp.drain_ids(queue, want=1, timeout=5) == [event.id]
    finally:
        await bus.close()
    with pytest.raises(ConnectionError, match="closed"):
        await bus.check()
    with pytest.raises(ConnectionError, match="closed"):
        await bus.publish(make_event())


async def test_close_stops_connecting_in_the_background(
    proxied: Settings, amqp_proxy: TcpProxy, bus_log: _BusLog
) -> None:
    await amqp_proxy.cut()
    bus = await Bus.start(proxied, name="test-start-close", max_backoff=0.2)
    await asyncio.sleep(0.5)
    await bus.close()
    await bus.close()  # idempotent
    connections = amqp_proxy.connections_total
    await amqp_proxy.restore()
    await asyncio.sleep(1.0)
    # No attempt after close: nothing reached the broker once it was back.
    assert amqp_proxy.connections_total == connections
    assert not bus.connected
    with pytest.raises(ConnectionError, match="closed"):
        await bus.check()
    assert "bus_connected" not in bus_log.events("info")
    assert bus_log.events("error") == []


async def test_bus_context_starts_the_app_and_relay_while_the_broker_is_down(
    proxied: Settings,
    amqp: Any,
    amqp_proxy: TcpProxy,
    tables: Any,
    make_event: Any,
    bus_log: _BusLog,
    eventually: Any,
) -> None:
    queue = await amqp.queue()
    await amqp_proxy.cut()
    app = web.Application()
    app.cleanup_ctx.append(bus_context(proxied, name="test-app-down"))
    app.cleanup_ctx.append(relay_context(proxied, tables.schema))
    runner = web.AppRunner(app)
    await runner.setup()  # would raise here if the bus needed the broker to start
    try:
        bus = app[BUS]
        with pytest.raises(ConnectionError):
            await bus.check()
        event = make_event()
        await tables.enqueue([(event, None)])

        async def attempted() -> bool:
            row = await tables.outbox_row(event.id)
            return bool(row and row["attempts"])

        # The relay shares the unconnected bus: its publish fails at once, the row stays.
        await eventually(attempted, timeout=5)
        error = (await tables.outbox_row(event.id))["last_error"]
        assert error.startswith("BusUnavailable: "), error  # a ConnectionError

        await amqp_proxy.restore()
        assert await amqp.drain_ids(queue, want=1, timeout=30) == [event.id]
        assert app[BUS] is bus
        await bus.check()
        assert await tables.outbox_rows() == 0
        assert bus_log.events("warning", "info") == ["bus_connect_failed", "bus_connected"]
    finally:
        await runner.cleanup()
    with pytest.raises(ConnectionError):
        await app[BUS].check()


# --- what "connected" means: the channel too, not only the connection -------------------


async def test_a_publish_while_the_channel_is_being_restored_raises_connection_error(
    proxied: Settings,
    amqp: Any,
    amqp_proxy: TcpProxy,
    make_event: Any,
    monkeypatch: pytest.MonkeyPatch,
    eventually: Any,
) -> None:
    # aio-pika marks its connection connected before it reopens the channels on it. The
    # test holds every channel's reopen at a gate, so the bus sits in exactly that window
    # (connection back, channel not restored) for as long as the test looks at it.
    bus = await Bus.connect(proxied, name="test-restoring", reconnect_interval=0.1)
    gate, restoring = asyncio.Event(), asyncio.Event()
    real_reopen = aio_pika.RobustChannel.reopen

    async def gated_reopen(channel: aio_pika.RobustChannel) -> None:
        restoring.set()
        await gate.wait()
        await real_reopen(channel)

    monkeypatch.setattr(aio_pika.RobustChannel, "reopen", gated_reopen)
    try:
        queue = await amqp.queue()
        await amqp_proxy.cut()
        await eventually(lambda: not bus.connected, timeout=5)
        await asyncio.wait_for(restoring.wait(), 5)  # the channel's reopen began
        await amqp_proxy.restore()
        link = bus._link
        assert link is not None
        await eventually(link.connection.connected.is_set, timeout=15)  # connection back …
        assert link.channel.is_closed  # … its channel held at the gate

        assert not bus.connected
        with pytest.raises(ConnectionError, match="amqp connection is restoring its channel"):
            await bus.check()
        with pytest.raises(ConnectionError, match="restoring its channel"):
            await bus.publish(make_event())
        with pytest.raises(ConnectionError):
            await bus.publish_raw("portal_session.used", b"{}", message_id="m1", headers={})

        gate.set()
        await eventually(lambda: bus.connected, timeout=10)
        await bus.check()
        event = make_event()
        await bus.publish(event)
        assert await amqp.drain_ids(queue, want=1, timeout=5) == [event.id]
    finally:
        gate.set()
        await bus.close()


async def test_a_publish_in_flight_when_the_link_drops_raises_connection_error(
    proxied: Settings, amqp: Any, amqp_proxy: Any, make_event: Any, eventually: Any
) -> None:
    # The broker has the message but its confirm is held back by the proxy: the publish
    # is in flight, for certain, when the link is cut.
    bus = await Bus.connect(proxied, name="test-in-flight", reconnect_interval=0.1)
    try:
        queue = await amqp.queue()
        amqp_proxy.hold_replies()
        publish = asyncio.ensure_future(bus.publish(make_event()))
        await eventually(lambda: _is(amqp.count(queue.name), 1), timeout=10)
        assert not publish.done()
        await amqp_proxy.cut()
        with pytest.raises(ConnectionError) as raised:
            await asyncio.wait_for(publish, 10)
        print(f"\nin-flight publish failed with {raised.value!r} from {raised.value.__cause__!r}")
        amqp_proxy.release_replies()
        await amqp_proxy.restore()
        await eventually(lambda: bus.connected, timeout=15)
        await bus.publish(make_event())
    finally:
        amqp_proxy.release_replies()
        await bus.close()


async def test_a_publish_the_broker_closes_the_channel_for_raises_connection_error(
    bus: Bus, amqp: Any, settings: Settings, make_event: Any, eventually: Any
) -> None:
    # An operator deleted the exchange: the broker closes the publishing channel (404).
    # aio-pika raises ChannelNotFoundEntity, not a ConnectionError; callers see one type.
    await amqp.channel.exchange_delete(settings.exchange)
    with pytest.raises(ConnectionError) as raised:
        await bus.publish(make_event())
    assert type(raised.value.__cause__).__name__ == "ChannelNotFoundEntity"
    # The robust channel reopens and re-declares the exchange: publishing works again.
    await eventually(lambda: bus.connected, timeout=10)
    queue = await amqp.queue()
    event = make_event()
    await bus.publish(event)
    assert await amqp.drain_ids(queue, want=1, timeout=5) == [event.id]
