"""RPC: JSON calls over RabbitMQ with direct reply-to, deadlines, typed errors, run-once.

Real RabbitMQ and Postgres (the slice's vhost and database). Each test has its own
call queue and its own schema holding ``rpc_calls`` (created by ``rpc_calls_ddl``, as a
serving service's migration does) and an ``effects`` table where the test handlers
write what they did: a call applied twice would show twice.
"""

# The schema in these f-strings is the test's own random identifier, never input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import json
import pickle
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import asyncpg
import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from prometheus_client import REGISTRY
from pydantic import ValidationError

from billfold.bus import BUS, Bus
from billfold.db import DB_POOL, _admin_url, apply_migrations, ensure_database
from billfold.rpc import (
    CALL_TYPES,
    DEADLINE_HEADER,
    REPLY_TO,
    RPC_CLIENT,
    RPC_SERVER,
    CreateSetupSession,
    DetachPaymentMethod,
    JsonObject,
    PayInvoice,
    RpcClient,
    RpcContext,
    RpcInvalidRequest,
    RpcNotFound,
    RpcServer,
    RpcStripeError,
    RpcTimeout,
    RpcUnavailable,
    SetAutoPay,
    SetCancelAtPeriodEnd,
    SetDefaultPaymentMethod,
    UpdateBillingProfile,
    parse_call,
    rpc_calls_ddl,
    rpc_client_context,
    rpc_server_context,
)
from billfold.rpc import server as server_module
from billfold.rpc.calls import CALL_ADAPTER
from billfold.rpc.store import RpcCallStore
from billfold.settings import Settings
from billfold_testing.infra import Slice
from billfold_testing.tcp_proxy import TcpProxy

SITE = "site_rpc"
CUSTOMER = "cu_owner"
HOSTED_URL = "https://invoice.stripe.com/i/acct_test/in_3ds"


def set_default(pm: str = "pm_1", **fields: Any) -> SetDefaultPaymentMethod:
    return SetDefaultPaymentMethod.model_validate(
        {"site_id": SITE, "customer_id": CUSTOMER, "payment_method_id": pm, **fields}
    )


def calls_counted(side: str, call: str, outcome: str) -> float:
    """``billfold_rpc_calls_total`` for these labels so far."""
    labels = {"side": side, "call": call, "outcome": outcome}
    return REGISTRY.get_sample_value("billfold_rpc_calls_total", labels) or 0.0


def deadline_in(seconds: float) -> int:
    """An ``x-deadline`` header value ``seconds`` from now (negative: already passed)."""
    return int((time.time() + seconds) * 1000)


# --- the handlers under test: what billing-sync's would do, against a test table ------------


@dataclass
class Handlers:
    """Handlers writing their effect through ``ctx.conn``; ``calls`` lists every run.

    ``pm_block`` waits on ``release`` (set at teardown), ``pm_gate`` on ``gate``;
    ``pm_not_owned`` is another customer's (not found); ``pm_default`` cannot be
    detached; invoice ``in_3ds`` needs the customer on Stripe's page.
    """

    schema: str
    calls: list[str] = field(default_factory=list)
    payment_methods: list[str] = field(default_factory=list)  # set_default's, as they run
    request_ids: list[str | None] = field(default_factory=list)  # ctx.request_id, as they run
    release: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    shuffle: bool = False

    async def effect(self, ctx: RpcContext, call_id: str, what: str) -> None:
        await ctx.conn.execute(
            f"INSERT INTO {self.schema}.effects (call_id, what) VALUES ($1, $2)", call_id, what
        )

    async def set_default(self, call: SetDefaultPaymentMethod, ctx: RpcContext) -> JsonObject:
        self.calls.append(call.call_id)
        pm = call.payment_method_id
        self.payment_methods.append(pm)
        self.request_ids.append(ctx.request_id)
        assert ctx.idempotency_key() == call.call_id
        assert ctx.idempotency_key("pm") == f"{call.call_id}:pm"
        if pm == "pm_not_owned" or call.customer_id != CUSTOMER:
            raise RpcNotFound()
        await self.effect(ctx, call.call_id, pm)
        if pm == "pm_block":
            await self.release.wait()
        if pm == "pm_gate":
            self.entered.set()
            await self.gate.wait()
        if self.shuffle:  # finish out of order, so replies cross each other
            await asyncio.sleep(random.random() * 0.05)
        return {"id": pm, "customer": call.customer_id, "default": True}

    async def detach(self, call: DetachPaymentMethod, ctx: RpcContext) -> JsonObject:
        self.calls.append(call.call_id)
        await self.effect(ctx, call.call_id, "detach")  # undone by the error below
        if call.payment_method_id == "pm_default":
            raise RpcInvalidRequest(
                "payment_method_is_default",
                "Choose another default card before removing this one.",
                param="payment_method_id",
            )
        return {"id": call.payment_method_id, "detached": True}

    async def pay(self, call: PayInvoice, ctx: RpcContext) -> JsonObject:
        self.calls.append(call.call_id)
        await self.effect(ctx, call.call_id, "pay")
        if call.invoice_id == "in_3ds":
            raise RpcStripeError(
                "authentication_required",
                "Your bank asks you to confirm this payment.",
                hosted_invoice_url=HOSTED_URL,
            )
        if call.invoice_id == "in_crash":
            raise RuntimeError("a bug in the handler")
        if call.invoice_id == "in_busy":
            raise RpcUnavailable(code="stripe_unreachable")
        return {"id": call.invoice_id, "status": "paid"}


@dataclass
class Rpc:
    """A running server (or several) and a client on the test's queue."""

    queue: str
    schema: str
    pool: asyncpg.Pool
    bus: Bus
    handlers: Handlers
    client: RpcClient
    servers: list[RpcServer] = field(default_factory=list)
    clients: list[RpcClient] = field(default_factory=list)

    async def serve(self, *, bus: Bus | None = None, register: bool = True) -> RpcServer:
        server = RpcServer(bus or self.bus, pool=self.pool, schema=self.schema, queue=self.queue)
        if register:
            server.register(SetDefaultPaymentMethod, self.handlers.set_default)
            server.register(DetachPaymentMethod, self.handlers.detach)
            server.register(PayInvoice, self.handlers.pay)
        await server.start()
        self.servers.append(server)
        return server

    def new_client(self, bus: Bus, **options: Any) -> RpcClient:
        client = RpcClient(bus, queue=self.queue, **options)
        self.clients.append(client)
        return client

    async def effects(self, call_id: str | None = None) -> list[str]:
        rows = await self.pool.fetch(
            f"SELECT what FROM {self.schema}.effects WHERE $1::text IS NULL OR call_id = $1",
            call_id,
        )
        return [r["what"] for r in rows]

    async def stored(self, call_id: str) -> Any:
        return await self.pool.fetchval(
            f"SELECT reply::text FROM {self.schema}.rpc_calls WHERE call_id = $1", call_id
        )


@pytest_asyncio.fixture
async def rpc_schema(db_pool: asyncpg.Pool, rand_name: Callable[[str], str]) -> AsyncIterator[str]:
    name = rand_name("test_rpc")
    await db_pool.execute(f"CREATE SCHEMA {name}")
    await db_pool.execute(rpc_calls_ddl(name))
    await db_pool.execute(f"CREATE TABLE {name}.effects (call_id text NOT NULL, what text)")
    try:
        yield name
    finally:
        await db_pool.execute(f"DROP SCHEMA {name} CASCADE")


@pytest_asyncio.fixture
async def rpc(
    bus: Bus, db_pool: asyncpg.Pool, rpc_schema: str, amqp: Any, rand_name: Callable[[str], str]
) -> AsyncIterator[Rpc]:
    queue = rand_name("test.rpc")
    amqp.queues.append(queue)  # deleted after the test
    handlers = Handlers(rpc_schema)
    client = RpcClient(bus, queue=queue, timeout=10)
    harness = Rpc(queue, rpc_schema, db_pool, bus, handlers, client, clients=[client])
    try:
        yield harness
    finally:
        handlers.release.set()  # lets blocked handlers finish, so servers drain
        handlers.gate.set()
        for c in harness.clients:
            await c.close()
        for server in harness.servers:
            await server.close()


@dataclass
class RawCaller:
    """A plain aio-pika channel that sends hand-written requests and keeps the replies."""

    channel: aio_pika.abc.AbstractChannel
    replies: list[aio_pika.abc.AbstractIncomingMessage] = field(default_factory=list)

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        deadline: int | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        correlation_id = uuid.uuid4().hex
        all_headers = dict(headers or {})
        if deadline is not None:
            all_headers[DEADLINE_HEADER] = deadline
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body,
                correlation_id=correlation_id,
                reply_to=REPLY_TO,
                content_type="application/json",
                headers=all_headers,
            ),
            routing_key=queue,
        )
        return correlation_id

    def reply_to(self, correlation_id: str) -> aio_pika.abc.AbstractIncomingMessage | None:
        return next((r for r in self.replies if r.correlation_id == correlation_id), None)


@pytest_asyncio.fixture
async def raw(amqp: Any) -> AsyncIterator[RawCaller]:
    channel = await amqp.connection.channel()
    caller = RawCaller(channel)

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        caller.replies.append(message)

    replies = await channel.declare_queue(REPLY_TO, passive=True)
    await replies.consume(keep, no_ack=True)
    try:
        yield caller
    finally:
        await channel.close()


class _Log:
    """Stands in for ``billfold.rpc.server.log``: records the events logged."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str, **_: Any) -> None:
            self.events.append(event)

        return record


@pytest.fixture
def server_log(monkeypatch: pytest.MonkeyPatch) -> _Log:
    recorder = _Log()
    monkeypatch.setattr(server_module, "log", recorder)
    return recorder


# --- round trip and wire format ---------------------------------------------------------


async def test_round_trip_writes_before_replying(rpc: Rpc) -> None:
    await rpc.serve()
    call = set_default("pm_1")
    counted = {side: calls_counted(side, call.type, "ok") for side in ("client", "server")}
    result = await rpc.client.call(call)
    for side, before in counted.items():
        assert calls_counted(side, call.type, "ok") == before + 1
    assert result == {"id": "pm_1", "customer": CUSTOMER, "default": True}
    # Effect and stored reply were committed before the reply left.
    assert await rpc.effects(call.call_id) == ["pm_1"]
    assert json.loads(await rpc.stored(call.call_id)) == {
        "status": "ok",
        "call_id": call.call_id,
        "result": result,
    }


async def take_request(
    queue: aio_pika.abc.AbstractQueue, eventually: Any
) -> aio_pika.abc.AbstractIncomingMessage:
    """The next request on ``queue`` (no server consumes it in these tests)."""
    got: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            got.append(message)
        return bool(got)

    await eventually(arrived)
    return got[0]


async def test_request_on_the_wire_is_json_with_a_deadline(
    rpc: Rpc, amqp: Any, eventually: Any
) -> None:
    # No server: we read the request off the queue ourselves and answer it by hand.
    queue = await amqp.channel.declare_queue(
        rpc.queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    call = set_default("pm_wire")
    began = time.time()
    task = asyncio.create_task(rpc.client.call(call, timeout=5))
    message = await take_request(queue, eventually)
    assert message.content_type == "application/json"
    assert json.loads(message.body) == json.loads(call.model_dump_json())  # plain JSON
    assert message.body[:1] == b"{"  # not a pickle (those start with 0x80)
    assert parse_call(message.body) == call
    assert message.reply_to is not None
    assert message.reply_to.startswith(REPLY_TO)  # direct reply-to
    assert message.message_id == call.call_id
    assert message.type == "payment_method.set_default"
    assert message.expiration == 5  # the broker drops it unread after the deadline
    deadline = message.headers[DEADLINE_HEADER]
    assert isinstance(deadline, int)
    assert began + 4.5 <= deadline / 1000 <= began + 5.5

    # A reply written by hand as JSON is what the client reads.
    reply = {"status": "ok", "call_id": call.call_id, "result": {"id": "pm_wire", "n": 1}}
    await amqp.channel.default_exchange.publish(
        aio_pika.Message(json.dumps(reply).encode(), correlation_id=message.correlation_id),
        routing_key=message.reply_to,
        mandatory=False,
    )
    assert await task == {"id": "pm_wire", "n": 1}


async def test_reply_that_is_not_our_json_is_refused_not_unpickled(
    rpc: Rpc, amqp: Any, eventually: Any
) -> None:
    queue = await amqp.channel.declare_queue(
        rpc.queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    task = asyncio.create_task(rpc.client.call(set_default("pm_wire"), timeout=5))
    request = await take_request(queue, eventually)
    assert request.reply_to is not None
    pickled = pickle.dumps({"status": "ok", "call_id": "x", "result": {}})
    await amqp.channel.default_exchange.publish(
        aio_pika.Message(pickled, correlation_id=request.correlation_id),
        routing_key=request.reply_to,
        mandatory=False,
    )
    with pytest.raises(RpcUnavailable) as caught:
        await task
    assert caught.value.code == "malformed_reply"


async def test_reply_on_the_wire_is_json(rpc: Rpc, raw: RawCaller, eventually: Any) -> None:
    await rpc.serve()
    # A request written by hand as JSON, not through the models.
    body = {
        "type": "payment_method.set_default",
        "call_id": "call_handwritten_1",
        "site_id": SITE,
        "customer_id": CUSTOMER,
        "payment_method_id": "pm_raw",
    }
    cid = await raw.send(rpc.queue, json.dumps(body).encode(), deadline=deadline_in(10))
    await eventually(lambda: raw.reply_to(cid) is not None)
    reply = raw.reply_to(cid)
    assert reply is not None
    assert reply.content_type == "application/json"
    assert json.loads(reply.body) == {
        "status": "ok",
        "call_id": "call_handwritten_1",
        "result": {"id": "pm_raw", "customer": CUSTOMER, "default": True},
    }


async def test_request_id_travels_to_the_handler(rpc: Rpc) -> None:
    await rpc.serve()
    with structlog.contextvars.bound_contextvars(request_id="req_rpc_1"):
        await rpc.client.call(set_default("pm_1"))
    await rpc.client.call(set_default("pm_2"))
    assert rpc.handlers.request_ids == ["req_rpc_1", None]


async def test_call_queue_is_quorum_with_a_delivery_limit_and_no_dead_lettering(
    rpc: Rpc, bf_slice: Slice, settings: Settings
) -> None:
    await rpc.serve()
    exe = shutil.which("rabbitmqctl")
    assert exe is not None
    out = subprocess.run(
        [
            *(exe, "-q", "list_queues", "-p", bf_slice.name),
            *("name", "type", "arguments", "--formatter", "json"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    row = next(r for r in json.loads(out) if r["name"] == rpc.queue)
    args = {a[0]: a[2] for a in row["arguments"]}
    assert row["type"] == "quorum"
    assert args["x-delivery-limit"] == settings.delivery_limit
    assert "x-dead-letter-exchange" not in args


# --- typed errors ------------------------------------------------------------------------


async def test_not_owned_object_is_not_found(rpc: Rpc) -> None:
    await rpc.serve()
    with pytest.raises(RpcNotFound) as caught:
        await rpc.client.call(set_default("pm_not_owned"))
    assert caught.value.body.type == "not_found"
    assert caught.value.message == "No such object."  # says nothing about whose it is
    assert caught.value.http_status == 404
    with pytest.raises(RpcNotFound):  # another customer asking for pm_1
        await rpc.client.call(set_default("pm_1", customer_id="cu_other"))


async def test_stripe_error_is_typed_and_carries_the_hosted_invoice_url(rpc: Rpc) -> None:
    await rpc.serve()
    call = PayInvoice(site_id=SITE, customer_id=CUSTOMER, invoice_id="in_3ds")
    with pytest.raises(RpcStripeError) as caught:
        await rpc.client.call(call)
    error = caught.value
    assert error.code == "authentication_required"
    assert error.message == "Your bank asks you to confirm this payment."
    assert error.hosted_invoice_url == HOSTED_URL
    assert error.http_status == 402
    # The handler's write was undone with the error; the error is the stored answer.
    assert await rpc.effects(call.call_id) == []
    assert json.loads(await rpc.stored(call.call_id))["error"]["type"] == "stripe_error"
    # Retrying gets the same answer without paying again.
    with pytest.raises(RpcStripeError):
        await rpc.client.call(call)
    assert rpc.handlers.calls == [call.call_id]


async def test_invalid_request_is_typed(rpc: Rpc) -> None:
    await rpc.serve()
    call = DetachPaymentMethod(site_id=SITE, customer_id=CUSTOMER, payment_method_id="pm_default")
    with pytest.raises(RpcInvalidRequest) as caught:
        await rpc.client.call(call)
    assert caught.value.code == "payment_method_is_default"
    assert caught.value.body.param == "payment_method_id"
    assert await rpc.effects() == []


async def test_a_failing_handler_answers_unavailable_and_is_not_stored(rpc: Rpc) -> None:
    await rpc.serve()
    for invoice in ("in_crash", "in_busy"):
        call = PayInvoice(site_id=SITE, customer_id=CUSTOMER, invoice_id=invoice)
        with pytest.raises(RpcUnavailable):
            await rpc.client.call(call)
        # Rolled back and not stored: a retry runs the call again.
        assert await rpc.effects(call.call_id) == []
        assert await rpc.stored(call.call_id) is None
        with pytest.raises(RpcUnavailable):
            await rpc.client.call(call)
        assert rpc.handlers.calls.count(call.call_id) == 2


async def test_call_without_a_handler_is_refused(rpc: Rpc) -> None:
    await rpc.serve()
    call = SetAutoPay(site_id=SITE, customer_id=CUSTOMER, subscription_id="sub_1", auto_pay=False)
    with pytest.raises(RpcInvalidRequest) as caught:
        await rpc.client.call(call)
    assert caught.value.code == "unsupported_call"


async def test_queue_nobody_serves_fails_at_once(rpc: Rpc) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(RpcUnavailable) as caught:
        await rpc.client.call(set_default(), timeout=30)
    assert caught.value.code == "not_served"
    assert loop.time() - began < 2


# --- deadlines ---------------------------------------------------------------------------


async def test_deadline_passing_raises_rpc_timeout(rpc: Rpc) -> None:
    await rpc.serve()
    timeouts = calls_counted("client", "payment_method.set_default", "timeout")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(RpcTimeout) as caught:
        await rpc.client.call(set_default("pm_block"), timeout=0.5)
    elapsed = loop.time() - began
    assert isinstance(caught.value, TimeoutError)
    assert 0.5 <= elapsed < 1.5
    assert calls_counted("client", "payment_method.set_default", "timeout") == timeouts + 1


async def test_request_reaching_the_server_late_is_skipped(
    rpc: Rpc, raw: RawCaller, server_log: _Log, eventually: Any
) -> None:
    await rpc.serve()
    stale = set_default("pm_stale")
    late_before = calls_counted("server", stale.type, "late")
    late = await raw.send(rpc.queue, stale.model_dump_json().encode(), deadline=deadline_in(-1))
    await eventually(lambda: "rpc_deadline_passed" in server_log.events)
    fresh = await raw.send(
        rpc.queue, set_default("pm_fresh").model_dump_json().encode(), deadline=deadline_in(10)
    )
    await eventually(lambda: raw.reply_to(fresh) is not None)
    assert raw.reply_to(late) is None
    assert calls_counted("server", stale.type, "late") == late_before + 1
    assert await rpc.effects() == ["pm_fresh"]
    assert await rpc.stored(stale.call_id) is None


async def test_broker_drops_a_request_nobody_took_before_its_deadline(
    rpc: Rpc, amqp: Any, eventually: Any
) -> None:
    await amqp.channel.declare_queue(rpc.queue, durable=True, arguments={"x-queue-type": "quorum"})
    with pytest.raises(RpcTimeout):
        await rpc.client.call(set_default(), timeout=0.3)

    async def empty() -> bool:
        return bool(await amqp.count(rpc.queue) == 0)

    await eventually(empty)


# --- run once --------------------------------------------------------------------------


async def test_retried_call_runs_once(rpc: Rpc, eventually: Any) -> None:
    await rpc.serve()
    call = set_default("pm_gate")
    # The first attempt times out while the handler is still at work...
    with pytest.raises(RpcTimeout):
        await rpc.client.call(call, timeout=0.5)
    rpc.handlers.gate.set()  # ...then finishes and commits.
    await eventually(lambda: rpc.stored(call.call_id))
    # The retry (same call_id) gets the stored reply; the handler does not run again.
    replayed = calls_counted("server", call.type, "replayed")
    result = await rpc.client.call(call)
    assert result == {"id": "pm_gate", "customer": CUSTOMER, "default": True}
    assert await rpc.client.call(call) == result
    assert calls_counted("server", call.type, "replayed") == replayed + 2
    assert rpc.handlers.calls == [call.call_id]
    assert await rpc.effects() == ["pm_gate"]


async def _a_retry_waits_on_the_claim(pool: asyncpg.Pool) -> bool:
    """A copy of a call is blocked on the row its first attempt claimed."""
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE '%rpc_calls%'"
    )
    return bool(waiting >= 1)


async def test_concurrent_copies_of_a_call_run_once(rpc: Rpc, eventually: Any) -> None:
    # Two replicas; the retry arrives while the first attempt still runs on the other.
    await rpc.serve()
    await rpc.serve()
    call = set_default("pm_gate")
    first = asyncio.create_task(rpc.client.call(call))
    await rpc.handlers.entered.wait()
    second = asyncio.create_task(rpc.new_client(rpc.bus).call(call))
    await eventually(lambda: _a_retry_waits_on_the_claim(rpc.pool))
    rpc.handlers.gate.set()
    assert await first == await second == {"id": "pm_gate", "customer": CUSTOMER, "default": True}
    assert rpc.handlers.calls == [call.call_id]
    assert await rpc.effects() == ["pm_gate"]


async def test_call_with_retry_resends_the_same_call_id(rpc: Rpc, eventually: Any) -> None:
    await rpc.serve()
    await rpc.serve()
    call = set_default("pm_gate")
    task = asyncio.create_task(rpc.client.call_with_retry(call, timeout=1.0, attempts=5))
    await rpc.handlers.entered.wait()
    # The first attempt times out; its retry reaches the other replica and waits there
    # on the claimed call_id. Only then does the first attempt finish.
    await eventually(lambda: _a_retry_waits_on_the_claim(rpc.pool))
    rpc.handlers.gate.set()
    assert await task == {"id": "pm_gate", "customer": CUSTOMER, "default": True}
    assert rpc.handlers.calls == [call.call_id]
    assert await rpc.effects() == ["pm_gate"]


async def test_call_id_reused_for_another_call_is_refused(rpc: Rpc) -> None:
    await rpc.serve()
    first = set_default("pm_1")
    await rpc.client.call(first)
    other = set_default("pm_2", call_id=first.call_id)
    with pytest.raises(RpcInvalidRequest) as caught:
        await rpc.client.call(other)
    assert caught.value.code == "call_id_reused"
    stranger = set_default("pm_1", call_id=first.call_id, customer_id="cu_other")
    with pytest.raises(RpcInvalidRequest):  # never another customer's stored reply
        await rpc.client.call(stranger)
    assert await rpc.effects() == ["pm_1"]


# --- malformed requests ------------------------------------------------------------------


async def test_malformed_requests_get_an_error_and_the_server_keeps_serving(
    rpc: Rpc, raw: RawCaller, eventually: Any
) -> None:
    await rpc.serve()
    ok = set_default("pm_ok").model_dump_json().encode()
    bodies = {
        "not json": (b"{not json", deadline_in(10)),
        "a pickle": (pickle.dumps({"type": "payment_method.set_default"}), deadline_in(10)),
        "unknown call": (
            b'{"type": "customer.delete", "site_id": "s", "customer_id": "c"}',
            deadline_in(10),
        ),
        "extra field": (
            set_default("pm_x").model_dump_json()[:-1].encode() + b', "amount": 1}',
            deadline_in(10),
        ),
        "no deadline": (ok, None),
    }
    sent = {name: await raw.send(rpc.queue, body, deadline=d) for name, (body, d) in bodies.items()}
    await eventually(lambda: all(raw.reply_to(cid) is not None for cid in sent.values()))
    for name, cid in sent.items():
        message = raw.reply_to(cid)
        assert message is not None
        reply = json.loads(message.body)
        assert reply["status"] == "error", name
        assert reply["error"]["type"] == "invalid_request", name
        assert reply["error"]["code"] == "malformed_request", name
    assert json.loads(raw.reply_to(sent["no deadline"]).body)["error"]["param"] == "x-deadline"  # type: ignore[union-attr]
    assert await rpc.effects() == []
    # Still serving.
    assert (await rpc.client.call(set_default("pm_after")))["id"] == "pm_after"


# --- many calls at once ------------------------------------------------------------------


async def test_many_concurrent_calls_get_their_own_replies(rpc: Rpc) -> None:
    rpc.handlers.shuffle = True
    await rpc.serve()
    await rpc.serve()
    other_client = rpc.new_client(rpc.bus)
    calls = [set_default(f"pm_{i}") for i in range(120)]
    results = await asyncio.gather(
        *((rpc.client if i % 2 else other_client).call(call) for i, call in enumerate(calls))
    )
    assert [r["id"] for r in results] == [c.payment_method_id for c in calls]
    assert sorted(await rpc.effects()) == sorted(c.payment_method_id for c in calls)


# --- the broker going away -----------------------------------------------------------------


async def test_broker_down_raises_connection_error_quickly(
    rpc: Rpc, proxied: Settings, amqp_proxy: TcpProxy, eventually: Any
) -> None:
    await rpc.serve()  # on the direct connection: only the caller loses the broker
    client_bus = await Bus.connect(proxied, name="test-rpc-client", reconnect_interval=0.2)
    try:
        client = rpc.new_client(client_bus)
        assert (await client.call(set_default("pm_before")))["id"] == "pm_before"
        loop = asyncio.get_running_loop()

        # A call waiting for its reply when the link drops fails at once.
        waiting = asyncio.create_task(client.call(set_default("pm_block"), timeout=30))
        await eventually(lambda: "pm_block" in rpc.handlers.payment_methods)
        began = loop.time()
        await amqp_proxy.cut()
        with pytest.raises(ConnectionError):
            await waiting
        assert loop.time() - began < 2

        # A call while the broker is away fails at once too, not at its deadline.
        began = loop.time()
        with pytest.raises(ConnectionError):
            await client.call(set_default("pm_down"), timeout=30)
        assert loop.time() - began < 2

        # Once the link is back, the same client works again (reply-to consumed anew).
        await amqp_proxy.restore()
        await eventually(lambda: client_bus.connected, timeout=15)
        result = await client.call_with_retry(set_default("pm_after"), timeout=5)
        assert result["id"] == "pm_after"
    finally:
        await client_bus.close()
    assert "pm_down" not in await rpc.effects()


async def test_client_on_a_bus_not_connected_yet_raises_connection_error(
    rpc: Rpc, proxied: Settings, amqp_proxy: TcpProxy
) -> None:
    await amqp_proxy.cut()
    client_bus = await Bus.start(proxied, name="test-rpc-start", max_backoff=0.5)
    try:
        client = rpc.new_client(client_bus)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(ConnectionError):
            await client.call(set_default(), timeout=30)
        assert loop.time() - began < 1
    finally:
        await client_bus.close()


async def test_app_contexts_start_while_the_broker_is_down_and_serve_once_it_is_back(
    rpc: Rpc, proxied: Settings, amqp_proxy: TcpProxy, eventually: Any
) -> None:
    # A service's wiring: bus_context's Bus.start, then the RPC entries on app[BUS].
    await amqp_proxy.cut()
    bus = await Bus.start(proxied, name="test-rpc-app", max_backoff=0.3)
    app = web.Application()
    app[BUS] = bus
    app[DB_POOL] = rpc.pool

    def register(server: RpcServer) -> None:
        server.register(SetDefaultPaymentMethod, rpc.handlers.set_default)

    app.cleanup_ctx.extend(
        [
            rpc_server_context(schema=rpc.schema, register=register, queue=rpc.queue),
            rpc_client_context(queue=rpc.queue, timeout=5),
        ]
    )
    runner = web.AppRunner(app)
    try:
        await runner.setup()  # starts although the broker is unreachable
        assert not app[RPC_SERVER].serving
        with pytest.raises(ConnectionError):
            await app[RPC_SERVER].check()
        with pytest.raises(ConnectionError):
            await app[RPC_CLIENT].call(set_default("pm_early"))

        await amqp_proxy.restore()
        await eventually(lambda: app[RPC_SERVER].serving, timeout=15)
        await app[RPC_SERVER].check()
        result = await app[RPC_CLIENT].call(set_default("pm_app"))
        assert result["id"] == "pm_app"
    finally:
        await runner.cleanup()
        await bus.close()
    assert not app[RPC_SERVER].serving
    assert await rpc.effects() == ["pm_app"]


# --- the rpc_calls table -------------------------------------------------------------------


async def test_purge_removes_only_old_calls(rpc: Rpc) -> None:
    await rpc.serve()
    old, new = set_default("pm_old"), set_default("pm_new")
    await rpc.client.call(old)
    await rpc.client.call(new)
    await rpc.pool.execute(
        f"UPDATE {rpc.schema}.rpc_calls SET created_at = now() - interval '2 days' "
        "WHERE call_id = $1",
        old.call_id,
    )
    assert await RpcCallStore(rpc.schema).purge(rpc.pool, timedelta(days=1)) == 1
    assert await rpc.stored(old.call_id) is None
    assert await rpc.stored(new.call_id) is not None


async def test_rpc_calls_ddl_works_from_a_yoyo_python_migration(
    bf_slice: Slice, tmp_path: Path
) -> None:
    # How a serving service creates the table: a Python migration calling the helper.
    (tmp_path / "svc_0001_schema.sql").write_text("CREATE SCHEMA svc;")
    (tmp_path / "svc_0002_rpc_calls.py").write_text(
        "from yoyo import step\n"
        "from billfold.rpc import rpc_calls_ddl\n"
        'steps = [step(rpc_calls_ddl("svc"))]\n'
    )
    url = bf_slice.settings.database_url + "_rpc"
    await ensure_database(url)
    try:
        applied = await asyncio.to_thread(apply_migrations, url, [tmp_path])
        assert applied == ["svc_0001_schema", "svc_0002_rpc_calls"]
        conn = await asyncpg.connect(url)
        try:
            columns = await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'svc' AND table_name = 'rpc_calls' ORDER BY ordinal_position"
            )
            assert [c["column_name"] for c in columns] == [
                "call_id",
                "call_type",
                "site_id",
                "customer_id",
                "request_hash",
                "reply",
                "created_at",
            ]
            await conn.execute(rpc_calls_ddl("svc"))  # idempotent
        finally:
            await conn.close()
    finally:
        admin, name = _admin_url(url)
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    with pytest.raises(ValueError):
        rpc_calls_ddl("svc; DROP TABLE x")


# --- the call contracts ------------------------------------------------------------------


def test_every_call_type_round_trips_through_the_union() -> None:
    calls = [
        SetCancelAtPeriodEnd(
            site_id=SITE,
            customer_id=CUSTOMER,
            subscription_id="sub_1",
            cancel_at_period_end=True,
            reason={"feedback": "too_expensive", "comment": "Budget cuts"},
        ),
        parse_call(
            {
                "type": "subscription.resume",
                "site_id": SITE,
                "customer_id": CUSTOMER,
                "subscription_id": "sub_1",
            }
        ),
        SetAutoPay(site_id=SITE, customer_id=CUSTOMER, subscription_id="sub_1", auto_pay=True),
        CreateSetupSession(
            site_id=SITE,
            customer_id=CUSTOMER,
            success_url="https://portal.example/pm?done={CHECKOUT_SESSION_ID}",
            cancel_url="https://portal.example/pm",
            locale="fr",
        ),
        set_default(),
        DetachPaymentMethod(site_id=SITE, customer_id=CUSTOMER, payment_method_id="pm_2"),
        UpdateBillingProfile(
            site_id=SITE,
            customer_id=CUSTOMER,
            phone="",
            address={"line1": "1 Rue", "city": "Paris", "country": "FR"},
            tax_ids_add=[{"type": "eu_vat", "value": "FR12345678901"}],
            tax_ids_remove=["txi_1"],
        ),
        PayInvoice(site_id=SITE, customer_id=CUSTOMER, invoice_id="in_1"),
    ]
    assert sorted(c.type for c in calls) == sorted(CALL_TYPES)
    for call in calls:
        assert parse_call(call.model_dump_json()) == call
        assert call.call_id.startswith("call_")
    # The placeholder Stripe fills in survives as written.
    setup = parse_call(calls[3].model_dump_json())
    assert isinstance(setup, CreateSetupSession)
    assert setup.success_url.endswith("{CHECKOUT_SESSION_ID}")
    assert CALL_ADAPTER.json_schema()["discriminator"]["propertyName"] == "type"


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "payment_method.set_default", "site_id": SITE, "customer_id": CUSTOMER},
        {**set_default().model_dump(), "extra": 1},
        {**set_default().model_dump(), "payment_method_id": "pm 1; drop"},
        {**set_default().model_dump(), "call_id": "short"},
        {
            "type": "subscription.set_cancel_at_period_end",
            "site_id": SITE,
            "customer_id": CUSTOMER,
            "subscription_id": "sub_1",
            "cancel_at_period_end": False,
            "reason": {"feedback": "unused"},
        },
        {
            "type": "payment_method.create_setup_session",
            "site_id": SITE,
            "customer_id": CUSTOMER,
            "success_url": "javascript:alert(1)",
            "cancel_url": "https://portal.example/pm",
        },
        {"type": "customer.update_profile", "site_id": SITE, "customer_id": CUSTOMER},
        {
            "type": "customer.update_profile",
            "site_id": SITE,
            "customer_id": CUSTOMER,
            "email": "not-an-email",
        },
    ],
)
def test_invalid_calls_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_call(bad)
