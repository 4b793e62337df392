"""The serving side of RPC: consume the call queue, run a handler once per call, reply.

Each request is processed as:

1. parse: the ``x-deadline`` header and the JSON body through the call union. A request
   that does not parse gets an ``invalid_request`` reply (``malformed_request``) and is
   acked; the server never crashes on one, and never unpickles anything.
2. drop if late: a request whose deadline already passed is acked without running and
   without a reply. Its caller has already raised ``RpcTimeout`` (the deadline is the
   caller's own), so a reply would be read by nobody; skipping stale work is what lets
   a backlog drain after an outage. (The broker drops most of them already: requests
   carry the remaining time as their ``expiration``.)
3. run once: in one transaction, claim the ``call_id`` in ``{schema}.rpc_calls``
   (``RpcCallStore``), run the handler (in a savepoint) with the same connection, store
   the reply, commit. A retried call finds the stored reply and the handler does not
   run again. Typed errors the handler raises (``RpcNotFound``, ``RpcStripeError``,
   ``RpcInvalidRequest``) are definitive: the handler's writes are rolled back to the
   savepoint and the error reply is stored. ``RpcUnavailable``, any other exception,
   and a database outage roll everything back and reply ``unavailable`` (not stored, so
   a retry runs the call).
4. reply JSON to ``reply_to`` with the request's ``correlation_id``, then ack. A crash
   before the ack redelivers the request, and step 3 answers it from the table.

The handler may outlive the deadline (its Stripe write may already be done; finishing
and committing keeps the mirror right); it can read ``ctx.remaining()`` to bound its own
Stripe timeouts.

The queue is a durable quorum queue with a delivery limit (a request that kills the
server each time is dropped after ``delivery_limit`` tries), and no dead-letter queue:
a request is worthless once its caller gave up and its reply-to address is gone, so
there is nothing to replay, and expired requests would only fill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aio_pika
import aio_pika.abc
import asyncpg
import structlog
from pydantic import ValidationError

from billfold.bus import _ACQUIRE_FAILED, REQUEST_ID_HEADER, Bus, _header_text
from billfold.logs import get_logger
from billfold.rpc import metrics, wire
from billfold.rpc.calls import CALL_TYPES, Call, CallBase, parse_call
from billfold.rpc.replies import (
    JsonObject,
    RpcError,
    RpcErrorReply,
    RpcInvalidRequest,
    RpcOk,
    RpcReply,
    RpcUnavailable,
    dump_reply,
)
from billfold.rpc.store import RpcCallStore

log = get_logger("billfold.rpc")

C = TypeVar("C", bound=CallBase)


@dataclass(frozen=True)
class RpcContext:
    """What a handler gets besides the call."""

    # In the transaction that also stores the reply: write the mirror through it.
    conn: asyncpg.Connection
    call_id: str
    deadline: float  # Unix seconds; the caller gives up then
    request_id: str | None

    def remaining(self) -> float:
        """Seconds left until the caller gives up (negative once it has)."""
        return self.deadline - wire.now()

    def idempotency_key(self, step: str | None = None) -> str:
        """Stripe's ``Idempotency-Key`` for this call's write (``step`` names each one
        of a handler that writes more than once): a retry re-sends the same key, so a
        write that reached Stripe before a crash is not made twice."""
        return self.call_id if step is None else f"{self.call_id}:{step}"


CallHandler = Callable[[Any, RpcContext], Awaitable[JsonObject]]

# The database is unreachable right now (the bus consumer's list, as it applies to
# acquiring too), or a concurrent copy of the call held its row past our deadline: the
# caller may retry.
_DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *_ACQUIRE_FAILED,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
)


def _validation_summary(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    loc = first["loc"]
    if len(loc) > 1 and loc[0] in CALL_TYPES:  # the union's tag, not a field
        loc = loc[1:]
    param = ".".join(str(p) for p in loc) or None
    return f"Malformed request: {first['msg']}.", param


def _parse(message: aio_pika.abc.AbstractIncomingMessage) -> tuple[Call, float] | RpcErrorReply:
    """The call and its deadline, or the ``malformed_request`` reply to send instead."""
    deadline = wire.read_deadline(message.headers)
    if deadline is None:
        error = RpcInvalidRequest(
            "malformed_request", "Malformed request: no deadline.", param=wire.DEADLINE_HEADER
        )
        param: str | None = wire.DEADLINE_HEADER
    else:
        try:
            return parse_call(message.body), deadline
        except ValidationError as exc:
            text, param = _validation_summary(exc)
            error = RpcInvalidRequest("malformed_request", text, param=param)
    log.warning("rpc_request_malformed", message_id=message.message_id, param=param)
    return RpcErrorReply(call_id=None, error=error.body)


class RpcServer:
    """Serves the calls of one queue with the handlers registered for each call type."""

    def __init__(
        self,
        bus: Bus,
        *,
        pool: asyncpg.Pool,
        schema: str,
        queue: str = wire.BILLING_QUEUE,
        prefetch: int = 16,
    ) -> None:
        self.bus = bus
        self.pool = pool
        self.queue_name = queue
        self.prefetch = prefetch
        self.store = RpcCallStore(schema)
        self._handlers: dict[str, CallHandler] = {}
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def register(
        self, call_type: type[C], handler: Callable[[C, RpcContext], Awaitable[JsonObject]]
    ) -> None:
        """Serve ``call_type`` (a model from ``billfold.rpc.calls``) with ``handler``.

        The handler returns the updated mirror object as a JSON-ready dict
        (``model_dump(mode="json")``), after writing it through ``ctx.conn``; it raises
        ``RpcNotFound`` for an object the call's customer does not own.
        """
        name = call_type.model_fields["type"].default
        if not isinstance(name, str):
            raise TypeError(f"{call_type!r} is not an RPC call model")
        self._handlers[name] = cast(CallHandler, handler)

    async def start(self) -> None:
        """Declare the queue and start consuming; ``ConnectionError`` if the bus is not
        connected (a serving service awaits ``bus.wait_connected()`` first)."""
        channel = await self.bus.open_channel()
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.declare_queue(
                self.queue_name,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.bus.settings.delivery_limit,
                },
            )
            tag = await queue.consume(self._on_message, no_ack=False)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._channel, self._queue, self._consumer_tag = channel, queue, tag
        log.info("rpc_serving", queue=self.queue_name, calls=sorted(self._handlers))

    @property
    def serving(self) -> bool:
        """True once consuming (until :meth:`close`); aio-pika re-consumes after a
        reconnect by itself."""
        return self._consumer_tag is not None

    async def check(self) -> None:
        """Readiness: raise unless serving over a connected bus."""
        if not self.serving:
            raise ConnectionError(f"not serving {self.queue_name} yet")
        await self.bus.check()

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - drain limit
        """Stop taking requests, let those in flight finish (up to ``timeout``), close.

        Requests not finished by then are redelivered to another replica when the
        channel closes, and answered from the table if they had committed.
        """
        queue, tag, self._consumer_tag = self._queue, self._consumer_tag, None
        if queue is not None and tag is not None:
            with contextlib.suppress(Exception):  # the channel may be gone already
                await queue.cancel(tag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            await channel.close()

    # --- one request -----------------------------------------------------------------

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._process(message)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _process(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        request_id = _header_text(message.headers, REQUEST_ID_HEADER)
        # Each delivery runs in its own task, so binding here cannot leak into others.
        structlog.contextvars.clear_contextvars()
        if request_id:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        parsed = _parse(message)
        if isinstance(parsed, RpcErrorReply):
            metrics.count("server", "unknown", "malformed")
            await self._reply(message, parsed)
            await self._settle(message.ack())
            return
        call, deadline = parsed
        structlog.contextvars.bind_contextvars(call_id=call.call_id, call_type=call.type)
        if deadline <= wire.now():
            log.info("rpc_deadline_passed", late_by_s=round(wire.now() - deadline, 3))
            metrics.count("server", call.type, "late")
            await self._settle(message.ack())
            return
        began = time.monotonic()
        reply, outcome = await self._execute(call, deadline, request_id)
        await self._reply(message, reply)
        metrics.count("server", call.type, outcome, time.monotonic() - began)
        await self._settle(message.ack())

    async def _execute(
        self, call: Call, deadline: float, request_id: str | None
    ) -> tuple[RpcReply, str]:
        """Run ``call`` once (or answer it from the table): the reply and its outcome
        for the metrics. Never raises."""
        handler = self._handlers.get(call.type)
        if handler is None:
            log.warning("rpc_call_unsupported")
            error = RpcInvalidRequest("unsupported_call", "This call is not supported.")
            return RpcErrorReply(call_id=call.call_id, error=error.body), "invalid_request"
        try:
            return await self._run_once(call, handler, deadline, request_id)
        except RpcError as exc:  # unavailable, or a call id reused: not stored
            log.warning("rpc_call_refused", code=exc.code)
            return RpcErrorReply(call_id=call.call_id, error=exc.body), exc.body.type
        except _DB_UNAVAILABLE as exc:
            log.warning("rpc_call_unavailable", error=type(exc).__name__)
        except Exception:
            log.exception("rpc_handler_failed")
        return RpcErrorReply(call_id=call.call_id, error=RpcUnavailable().body), "unavailable"

    async def _run_once(
        self, call: Call, handler: CallHandler, deadline: float, request_id: str | None
    ) -> tuple[RpcReply, str]:
        # Waiting (for a pooled connection, or on a concurrent copy of this call) past
        # the deadline is pointless: the caller has given up and will retry.
        wait = max(0.001, deadline - wire.now())
        async with self.pool.acquire(timeout=wait) as proxy, proxy.transaction():
            conn = cast(asyncpg.Connection, proxy)
            await conn.execute(
                "SELECT set_config('lock_timeout', $1, true)", f"{int(wait * 1000) + 1}ms"
            )
            stored = await self.store.claim(conn, call)
            if stored is not None:
                log.info("rpc_call_replayed", status=stored.status)
                return stored, "replayed"
            ctx = RpcContext(
                conn=conn, call_id=call.call_id, deadline=deadline, request_id=request_id
            )
            reply: RpcReply
            outcome = "ok"
            try:
                async with conn.transaction():  # a savepoint: a typed error undoes its writes
                    result = await handler(call, ctx)
                    reply = RpcOk(call_id=call.call_id, result=result)
            except RpcUnavailable:
                raise
            except RpcError as exc:
                log.info("rpc_call_error", error_type=exc.body.type, code=exc.code)
                reply = RpcErrorReply(call_id=call.call_id, error=exc.body)
                outcome = exc.body.type
            await self.store.answer(conn, call.call_id, reply)
        log.info("rpc_call_done", status=reply.status)
        return reply, outcome

    async def _reply(self, message: aio_pika.abc.AbstractIncomingMessage, reply: RpcReply) -> None:
        if not message.reply_to:
            log.warning("rpc_request_without_reply_to", message_id=message.message_id)
            return
        channel = self._channel
        if channel is None:
            return  # closing: the request is redelivered and answered from the table
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    dump_reply(reply),
                    content_type=wire.CONTENT_TYPE,
                    correlation_id=message.correlation_id,
                    type="rpc.reply",
                ),
                routing_key=message.reply_to,
                # A reply whose caller is gone is dropped; mandatory would also make this
                # broker return replies it did deliver to a direct reply-to consumer.
                mandatory=False,
            )
        except Exception as exc:  # the ack fails too then, and the broker redelivers
            log.warning("rpc_reply_failed", error=type(exc).__name__)

    async def _settle(self, action: Awaitable[None]) -> None:
        try:
            await action
        except Exception as exc:  # the broker redelivers; the table answers it
            log.warning("rpc_ack_failed", error=type(exc).__name__)
