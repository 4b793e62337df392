"""Outbox + relay against real Postgres and RabbitMQ, including a broker outage.

The outage is real: a ``TcpProxy`` sits between the relay's bus and RabbitMQ and
cuts every connection. Events are read back with a plain aio-pika consumer on the
broker's real port, and applied through ``Bus.consume`` to show the dedupe absorbs the
duplicates an outage can cause.
"""

# The schema in these f-strings is the test's own random identifier, never input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from billfold import outbox as outbox_module
from billfold.bus import BUS, Bus, bus_context
from billfold.events import Event, parse_event
from billfold.outbox import channel_name, enqueue, relay_context
from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy


def seq_of(body: bytes) -> tuple[str, int]:
    event = parse_event(body)
    data = event.data.model_dump()
    return str(data["session_id"]), int(data["seq"])


async def test_rollback_publishes_nothing_commit_publishes_at_once(
    schema: str, db_pool: asyncpg.Pool, amqp: Any, tables: Any, make_event: Any, relays: Any
) -> None:
    queue = await amqp.queue()
    await relays.start(safety_poll=30, listening=True)

    rolled_back = make_event(request_id="req_rolled_back")

    async def failing_change() -> None:
        async with db_pool.acquire() as conn, conn.transaction():
            await enqueue(conn, schema, rolled_back)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await failing_change()

    event = make_event(request_id="req_committed")
    started = time.monotonic()
    async with db_pool.acquire() as conn, conn.transaction():
        await enqueue(conn, schema, event, ordering_key="ps_1")
    got = await amqp.drain(queue, want=1, timeout=5, settle=0.3)
    # NOTIFY woke the relay: far below the 30 s safety poll.
    latency = amqp.arrivals[event.id] - started
    assert [m.message_id for m in got] == [event.id]
    message = got[0]
    assert message.headers["x-request-id"] == "req_committed"
    assert message.type == "portal_session.used"
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2
    assert parse_event(message.body) == event
    assert await tables.outbox_rows() == 0
    print(f"\noutbox commit-to-queue latency: {latency * 1000:.1f} ms")
    assert latency < 1.0, latency


async def test_failed_head_blocks_its_key_only(
    schema: str, db_pool: asyncpg.Pool, amqp: Any, tables: Any, make_event: Any, relays: Any
) -> None:
    queue = await amqp.queue()
    a1, a2, b1 = make_event("ps_a", 1), make_event("ps_a", 2), make_event("ps_b", 1)
    await tables.enqueue([(a1, "ps_a"), (a2, "ps_a"), (b1, "ps_b")])
    # As if a1's publish had failed: it waits for its retry, and a2 must wait behind it.
    await db_pool.execute(
        f"UPDATE {schema}.outbox SET next_attempt_at = now() + interval '1 hour', "
        "attempts = 1 WHERE event_id = $1",
        a1.id,
    )
    relay = relays.new()
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    assert await amqp.drain_ids(queue, want=1, timeout=5) == [b1.id]

    await db_pool.execute(f"UPDATE {schema}.outbox SET next_attempt_at = now()")
    assert await relay.run_once() == 1  # a1 only: a2 is not the head yet
    assert await relay.run_once() == 1  # then a2
    assert await amqp.drain_ids(queue, want=2, timeout=5) == [a1.id, a2.id]


async def test_a_row_locked_elsewhere_is_skipped_not_waited_for(
    schema: str, db_pool: asyncpg.Pool, amqp: Any, tables: Any, make_event: Any, relays: Any
) -> None:
    # Another relay (or anyone) holds a lock on one claimable row: this relay's claim
    # takes the other rows at once (SKIP LOCKED) instead of queueing behind the lock.
    queue = await amqp.queue()
    locked, free1, free2 = make_event("ps_a"), make_event("ps_b"), make_event("ps_c")
    await tables.enqueue([(locked, None), (free1, None), (free2, None)])
    relay = relays.new()
    async with db_pool.acquire() as holder:
        lock = holder.transaction()
        await lock.start()
        try:
            await holder.execute(
                f"SELECT 1 FROM {schema}.outbox WHERE event_id = $1 FOR UPDATE", locked.id
            )
            started = time.monotonic()
            published = await asyncio.wait_for(relay.run_once(), 5)
            elapsed = time.monotonic() - started
            assert published == 2
            assert elapsed < 2.0, elapsed
            assert sorted(await amqp.drain_ids(queue, want=2, timeout=5)) == sorted(
                [free1.id, free2.id]
            )
            assert await relay.run_once() == 0  # the locked row is still skipped
        finally:
            await lock.rollback()
    assert await relay.run_once() == 1  # released: now it is claimed
    assert await amqp.drain_ids(queue, want=1, timeout=5) == [locked.id]
    assert await tables.outbox_rows() == 0


async def test_two_relays_publish_each_event_once_in_key_order(
    amqp: Any, tables: Any, make_event: Any, relays: Any, eventually: Any
) -> None:
    queue = await amqp.queue()
    keys = [f"ps_{i}" for i in range(40)]
    seq: Counter[str] = Counter()
    batches: list[list[tuple[Event, str | None]]] = []
    for _ in range(20):  # 20 transactions of 30 events: 600, across 40 keys + unkeyed
        batch: list[tuple[Event, str | None]] = []
        for j in range(30):
            key = keys[(len(batches) * 7 + j) % len(keys)]
            seq[key] += 1
            batch.append((make_event(key, seq[key]), key if j % 10 else None))
        batches.append(batch)
    expected = {e.id for b in batches for e, _ in b}

    for _ in range(2):
        await relays.start(batch_size=50, safety_poll=30)
    # One transaction after another while both relays run, as a producer would: the
    # order within a key is the enqueue order (see outbox docstring).
    for batch in batches:
        await tables.enqueue(batch)
    await eventually(tables.outbox_empty, timeout=20)

    got = await amqp.drain(queue, want=len(expected), timeout=20)
    ids = [m.message_id for m in got]
    assert Counter(ids).most_common(1)[0][1] == 1, "an event was published twice"
    assert set(ids) == expected
    _assert_key_order(got, keyed={e.id for b in batches for e, k in b if k})
    assert sum(r.published_total for r in relays.all) == len(expected)
    print(f"\ntwo relays shared the work: {[r.published_total for r in relays.all]}")


def _assert_key_order(messages: list[Any], keyed: set[str]) -> None:
    last: dict[str, int] = {}
    for message in messages:
        if message.message_id not in keyed:
            continue
        key, n = seq_of(message.body)
        assert n > last.get(key, -1), f"{key}: {n} after {last.get(key)}"
        last[key] = n


async def test_broker_cut_mid_run_loses_nothing(
    proxied: Settings,
    amqp_proxy: TcpProxy,
    amqp: Any,
    tables: Any,
    make_event: Any,
    relays: Any,
    eventually: Any,
) -> None:
    proxy, schema, db_pool = amqp_proxy, tables.schema, tables.pool
    raw = await amqp.queue()
    # The consumer side: the real Bus.consume with its dedupe, on its own quorum queue.
    consumer_queue = amqp.quorum_queue_name()
    # Through the proxy too: the cut also kills the consumer mid-flight, so handled but
    # unacked messages come back and the dedupe must absorb them as well.
    consumer_bus = await Bus.connect(proxied, name="test-consumer")

    async def apply(event: Event, conn: asyncpg.Connection) -> None:
        await conn.execute(f"INSERT INTO {schema}.effects (event_id) VALUES ($1)", event.id)

    try:
        await consumer_bus.consume(
            consumer_queue,
            ["portal_session.*"],
            apply,
            pool=db_pool,
            schema=schema,
            consumer="test",
        )
        relay = await relays.start(proxied, max_backoff=1.0, safety_poll=30)

        events = [make_event(f"ps_{i % 25}", i) for i in range(500)]
        keyed = {e.id for i, e in enumerate(events) if i % 2 == 0}
        rows = [(e, e.data.session_id if e.id in keyed else None) for e in events]
        expected = {e.id for e in events}
        for start in range(0, 300, 100):
            await tables.enqueue(rows[start : start + 100])
        # Cut while the relay is busy, so publishes and confirms are in flight.
        await eventually(lambda: relay.published_total >= 100, interval=0.001)
        await proxy.cut()
        published_before_cut = relay.published_total
        for start in range(300, 500, 100):  # more transactions during the outage
            await tables.enqueue(rows[start : start + 100])
        await asyncio.sleep(2.0)
        assert await tables.outbox_rows() > 0  # the outage really held rows back
        await proxy.restore()

        await eventually(tables.outbox_empty, timeout=20)
        got = await amqp.drain(raw, want=len(expected), timeout=20)
        ids = Counter(m.message_id for m in got)
        assert set(ids) == expected, f"lost {len(expected - set(ids))}"
        duplicates = sum(c - 1 for c in ids.values())
        print(
            f"\nbroker cut after {published_before_cut} confirmed: {len(got)} messages for "
            f"{len(expected)} events, {duplicates} duplicates, "
            f"{proxy.connections_total} proxy connections, {relay.failure_streaks} outage(s)"
        )
        # A re-published copy may repeat an event, but a key's first copies stay in order.
        firsts: dict[str | None, Any] = {}
        for message in got:
            firsts.setdefault(message.message_id, message)
        _assert_key_order(list(firsts.values()), keyed=keyed)

        async def applied_all() -> bool:
            n = await db_pool.fetchval(f"SELECT count(DISTINCT event_id) FROM {schema}.effects")
            return bool(n == len(expected))

        await eventually(applied_all, timeout=20)
        await asyncio.sleep(0.3)  # let any duplicate copies reach the consumer too
        total = await db_pool.fetchval(f"SELECT count(*) FROM {schema}.effects")
        assert total == len(expected)  # each applied exactly once despite duplicates
    finally:
        await consumer_bus.close()


async def test_broker_down_at_start_keeps_rows_then_publishes(
    proxied: Settings,
    amqp_proxy: TcpProxy,
    amqp: Any,
    tables: Any,
    make_event: Any,
    relays: Any,
    eventually: Any,
) -> None:
    schema, db_pool = tables.schema, tables.pool
    queue = await amqp.queue()
    await amqp_proxy.cut()
    relay = await relays.start(proxied, max_backoff=1.0, safety_poll=30)
    events = [make_event(f"ps_{i % 3}", i) for i in range(20)]
    await tables.enqueue([(e, e.data.session_id) for e in events])

    async def attempts_recorded() -> bool:
        rows = await db_pool.fetch(f"SELECT attempts, last_error FROM {schema}.outbox")
        return len(rows) == 20 and any(r["attempts"] >= 2 for r in rows)

    await eventually(attempts_recorded, timeout=10)
    await asyncio.sleep(1.0)
    rows = await db_pool.fetch(
        f"SELECT attempts, last_error FROM {schema}.outbox WHERE attempts > 0"
    )
    # Only the head of each key is tried; backoff, not a busy loop.
    assert len(rows) == 3
    assert all(r["last_error"] for r in rows)
    assert "guest:guest" not in json.dumps([r["last_error"] for r in rows])
    assert max(r["attempts"] for r in rows) <= 8
    assert relay.failure_streaks == 1  # one warning for the whole outage

    await amqp_proxy.restore()
    await eventually(tables.outbox_empty, timeout=15)
    got = await amqp.drain(queue, want=20, timeout=10)
    assert sorted(m.message_id for m in got) == sorted(e.id for e in events)
    _assert_key_order(got, keyed={e.id for e in events})


async def test_backoff_ends_when_the_bus_connects(
    proxied: Settings,
    amqp: Any,
    tables: Any,
    make_event: Any,
    relays: Any,
    amqp_proxy: TcpProxy,
    eventually: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # session-api started during a broker outage: its bus connects in the background and
    # the relay sharing it backs off meanwhile. The first publish must follow the bus's
    # connect, not the rest of a backoff grown long during the outage.
    backoffs: list[tuple[float, float]] = []  # (when the sleep began, its length)

    def recording_backoff(attempt: int, cap: float) -> float:
        seconds = real_backoff(attempt, cap)
        backoffs.append((time.monotonic(), seconds))
        return seconds

    real_backoff = outbox_module._backoff
    monkeypatch.setattr(outbox_module, "_backoff", recording_backoff)
    queue = await amqp.queue()
    await amqp_proxy.cut()
    bus = await Bus.start(proxied, name="test-relay-bus", max_backoff=0.5)
    try:
        relay = await relays.start(bus=bus, max_backoff=60, safety_poll=30)
        event = make_event()
        await tables.enqueue([(event, "ps_1")])
        # The row's own retry is scheduled as far out as the relay's sleep, so each failed
        # round takes about twice its backoff: reaching an 8 s one takes up to ~31 s of
        # jittered sleeps, more on a loaded machine (a condition, so a long limit is free).
        await eventually(lambda: bool(backoffs) and backoffs[-1][1] >= 8, timeout=80)
        began, backoff = backoffs[-1]
        await amqp_proxy.restore()
        await bus.wait_connected(timeout=10)
        connected = time.monotonic()
        assert began + backoff - connected > 4, "the backoff would have ended soon anyway"

        got = await amqp.drain(queue, want=1, timeout=10, settle=0.1)
        assert [m.message_id for m in got] == [event.id]
        latency = amqp.arrivals[event.id] - connected
        print(f"\npublished {latency:.2f} s after the bus connected ({backoff:.1f} s backoff)")
        assert latency < 2.0, latency
        assert await tables.outbox_rows() == 0
        assert relay.failure_streaks == 1
    finally:
        await bus.close()


async def test_enqueue_notifies_channel(
    settings: Settings, schema: str, db_pool: asyncpg.Pool, make_event: Any
) -> None:
    # The NOTIFY is part of the caller's transaction: delivered at commit, not before.
    listener = await asyncpg.connect(settings.database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(channel_name(schema), lambda *a: heard.put_nowait(a[2]))
    try:
        async with db_pool.acquire() as conn, conn.transaction():
            await enqueue(conn, schema, make_event())
            await asyncio.sleep(0.2)
            assert heard.empty()
        assert await asyncio.wait_for(heard.get(), 2) == channel_name(schema)
    finally:
        await listener.close()


async def test_relay_context_shares_the_app_bus(
    settings: Settings, amqp: Any, tables: Any, make_event: Any
) -> None:
    queue = await amqp.queue()
    app = web.Application()
    app.cleanup_ctx.append(bus_context(settings, name="test-app"))
    app.cleanup_ctx.append(relay_context(settings, tables.schema))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup contexts' start-up halves
    try:
        await app[BUS].check()
        event = make_event()
        await tables.enqueue([(event, None)])
        assert await amqp.drain_ids(queue, want=1, timeout=5) == [event.id]
    finally:
        await runner.cleanup()
    with pytest.raises(ConnectionError):
        await app[BUS].check()


async def test_relay_listens_again_after_its_connection_drops(
    db_pool: asyncpg.Pool, amqp: Any, tables: Any, make_event: Any, relays: Any, eventually: Any
) -> None:
    queue = await amqp.queue()
    relay = await relays.start(safety_poll=30, listening=True)
    old_pid = relay.listener_pid
    await db_pool.execute("SELECT pg_terminate_backend($1)", old_pid)
    await eventually(lambda: relay.listening and relay.listener_pid != old_pid)

    event = make_event()
    started = time.monotonic()
    await tables.enqueue([(event, None)])
    assert await amqp.drain_ids(queue, want=1, timeout=5, settle=0.1) == [event.id]
    assert amqp.arrivals[event.id] - started < 1.0  # a notify, not the 30 s safety poll


def test_schema_names_are_checked_identifiers() -> None:
    assert channel_name("portal") == "billfold_outbox_portal"
    for bad in ("portal; DROP TABLE x", "Portal", "a.b", "", '"x"'):
        with pytest.raises(ValueError, match="identifier"):
            channel_name(bad)
