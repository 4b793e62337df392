"""The calling side of RPC: send a call, get its reply or a typed error, never hang.

One channel per client, opened on the shared ``Bus`` the first time it is needed (so a
service that started while the broker was down gets ``ConnectionError`` until it is
back, not a crash at start-up). It consumes RabbitMQ's direct reply-to pseudo-queue
(``amq.rabbitmq.reply-to``, no-ack, before anything is published, as the broker
requires) and publishes every request on that same channel, with publisher confirms
and ``mandatory``: a request no queue accepts (billing-sync never declared it) fails at
once instead of waiting out its deadline. Replies are matched to waiting calls by
``correlation_id`` (one per attempt; a late reply to an abandoned attempt is dropped).

Every call has a deadline (``timeout`` seconds, default :attr:`RpcClient.timeout`). It
travels as the ``x-deadline`` header (the server skips a request it reaches too late)
and as the message ``expiration`` (the broker drops it unread). When it passes the
caller gets ``RpcTimeout``; when the broker is unreachable, or the connection drops
while a call waits, ``ConnectionError`` at once. Either way the call may or may not have
run: :meth:`RpcClient.call_with_retry` resends the same call (same ``call_id``) and the
server's ``rpc_calls`` table makes sure it runs once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import structlog
from pydantic import ValidationError

from billfold.bus import REQUEST_ID_HEADER, Bus
from billfold.logs import get_logger
from billfold.rpc import metrics, wire
from billfold.rpc.calls import Call, dump_call
from billfold.rpc.replies import (
    JsonObject,
    RpcOk,
    RpcReply,
    RpcTimeout,
    RpcUnavailable,
    error_from_body,
    parse_reply,
)

log = get_logger("billfold.rpc")


class RpcClient:
    """Calls the server consuming ``queue`` over the bus's connection."""

    def __init__(self, bus: Bus, *, queue: str = wire.BILLING_QUEUE, timeout: float = 5.0) -> None:
        self.bus = bus
        self.queue = queue
        self.timeout = timeout
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._opening = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[RpcReply]] = {}
        self._closed = False

    async def call(self, call: Call, *, timeout: float | None = None) -> JsonObject:  # noqa: ASYNC109 - the call's deadline, sent to the server
        """Run ``call``; returns its result (the updated mirror object).

        Raises ``RpcNotFound`` / ``RpcStripeError`` / ``RpcInvalidRequest`` /
        ``RpcUnavailable`` for an error reply, ``RpcTimeout`` when the deadline passes,
        ``ConnectionError`` when the broker is unreachable.
        """
        began = time.monotonic()
        try:
            reply = await self.request(call, timeout=timeout)
        except RpcTimeout:
            metrics.count("client", call.type, "timeout")
            raise
        except ConnectionError:
            metrics.count("client", call.type, "connection_error")
            raise
        except RpcUnavailable:
            metrics.count("client", call.type, "unavailable")
            raise
        elapsed = time.monotonic() - began
        if isinstance(reply, RpcOk):
            metrics.count("client", call.type, "ok", elapsed)
            return reply.result
        metrics.count("client", call.type, reply.error.type, elapsed)
        raise error_from_body(reply.error)

    async def call_with_retry(
        self,
        call: Call,
        *,
        attempts: int = 3,
        timeout: float | None = None,  # noqa: ASYNC109 - each attempt's deadline
        backoff: float = 0.2,
    ) -> JsonObject:
        """:meth:`call`, resent (same ``call_id``, so it runs once) after a timeout, a
        lost connection or ``unavailable``; at most ``attempts`` tries, with jittered
        exponential backoff. Other errors are answers and are raised at once."""
        for attempt in range(attempts):
            try:
                return await self.call(call, timeout=timeout)
            except (RpcTimeout, ConnectionError, RpcUnavailable) as exc:
                if attempt + 1 >= attempts:
                    raise
                log.info(
                    "rpc_call_retry",
                    call_type=call.type,
                    call_id=call.call_id,
                    attempt=attempt + 1,
                    error=type(exc).__name__,
                )
                await asyncio.sleep(backoff * 2**attempt * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def request(self, call: Call, *, timeout: float | None = None) -> RpcReply:  # noqa: ASYNC109 - the call's deadline, sent to the server
        """Send ``call`` and return the reply as it came (ok or error); raises only
        ``RpcTimeout``, ``ConnectionError`` and ``RpcUnavailable`` (nobody serves)."""
        timeout = self.timeout if timeout is None else timeout
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        deadline = wire.now() + timeout
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        published = False
        try:
            async with asyncio.timeout(timeout):
                channel = await self._open()
                await channel.ready()  # after a reconnect: reply-to consumed again
                await self._publish(channel, call, correlation_id, deadline, timeout)
                published = True
                return await future
        except TimeoutError as exc:
            if not published and not self.bus.connected:
                raise ConnectionError("amqp connection is down; the call was not sent") from exc
            raise RpcTimeout(f"no reply to {call.type} within {timeout:g} s") from None
        finally:
            self._pending.pop(correlation_id, None)

    async def close(self) -> None:
        """Fail waiting calls with ``ConnectionError`` and close the channel. Idempotent."""
        self._closed = True
        channel, self._channel = self._channel, None
        self._fail_pending(ConnectionError("rpc client closed"))
        if channel is not None and not channel.is_closed:
            await channel.close()

    # --- the channel ------------------------------------------------------------------

    async def _open(self) -> aio_pika.abc.AbstractRobustChannel:
        if self._closed:
            raise ConnectionError("rpc client closed")
        if not self.bus.connected:
            raise ConnectionError(f"amqp bus {self.bus.name!r} is not connected")
        async with self._opening:
            if self._channel is None:
                channel = await self.bus.open_channel(
                    publisher_confirms=True, on_return_raises=True
                )
                # Robust: after a reconnect aio-pika re-consumes the reply-to queue on the
                # new channel; replies to requests sent before it cannot arrive any more.
                channel.close_callbacks.add(self._on_channel_closed)
                replies = await channel.declare_queue(wire.REPLY_TO, passive=True)
                await replies.consume(self._on_reply, no_ack=True)
                self._channel = channel
            return self._channel

    async def _publish(
        self,
        channel: aio_pika.abc.AbstractChannel,
        call: Call,
        correlation_id: str,
        deadline: float,
        timeout: float,  # noqa: ASYNC109 - the message's expiration
    ) -> None:
        headers: dict[str, Any] = {wire.DEADLINE_HEADER: wire.deadline_header(deadline)}
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if isinstance(request_id, str):
            headers[REQUEST_ID_HEADER] = request_id
        message = aio_pika.Message(
            dump_call(call),
            content_type=wire.CONTENT_TYPE,
            correlation_id=correlation_id,
            reply_to=wire.REPLY_TO,
            message_id=call.call_id,
            type=call.type,
            # Not persistent: a request is worthless after its deadline anyway.
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            expiration=timeout,
            headers=headers,
        )
        try:
            await channel.default_exchange.publish(message, routing_key=self.queue, mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:
            # Returned (no such queue: nobody serves it) or nacked (the queue refused).
            log.warning("rpc_request_refused", queue=self.queue, call_type=call.type)
            raise RpcUnavailable(code="not_served") from exc
        except (aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            # The connection or channel went away under us (ChannelInvalidStateError is
            # a RuntimeError).
            raise ConnectionError(f"amqp publish failed: {type(exc).__name__}") from exc

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            log.info("rpc_reply_unclaimed")  # its caller gave up (timed out, or a retry won)
            return
        try:
            future.set_result(parse_reply(message.body))
        except ValidationError:
            log.error("rpc_reply_malformed")
            future.set_exception(RpcUnavailable(code="malformed_reply"))

    def _on_channel_closed(self, _sender: object, exc: BaseException | None = None) -> None:
        if self._pending:
            log.warning("rpc_channel_lost", waiting=len(self._pending))
        self._fail_pending(
            ConnectionError(
                "amqp channel closed while waiting for the reply; "
                "the call may have run: retry it with the same call_id"
            )
        )

    def _fail_pending(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
