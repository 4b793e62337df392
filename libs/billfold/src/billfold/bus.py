"""The message bus: publishing events to ``billfold.events`` and consuming them safely.

RabbitMQ is transport only (DESIGN, Principles 1 and 3), so:

* publishing always waits for the broker's publisher confirm, and messages are
  persistent; producers normally go through the outbox (``billfold.outbox``), whose
  relay calls :meth:`Bus.publish_raw`;
* every consumer queue is a durable **quorum** queue with a delivery limit and a
  dead-letter queue ``<name>.dlq`` (at-least-once dead-lettering), so a poison message
  is parked instead of looping forever;
* :meth:`Bus.consume` acks only after the handler's transaction, which also recorded
  the event id in the consumer's ``processed_events`` table, has committed. A crash
  between commit and ack redelivers the message and the dedupe row absorbs it:
  effectively exactly-once effects over at-least-once delivery.

Connecting: :meth:`Bus.connect` fails fast if the broker is unreachable (tools, tests).
:meth:`Bus.start`, which ``bus_context`` uses, never fails for that: it tries once and,
if the broker does not answer, keeps trying in the background with capped backoff
while the service starts and serves (a producer's events wait in its outbox). Until the
first connect succeeds, everything that needs the broker (``publish*``, ``check``,
``declare_queue``, ``consume``) raises ``ConnectionError`` at once. After it, both kinds
behave the same: aio-pika's robust connection reconnects by itself.

"Connected" (:attr:`Bus.connected`, :meth:`Bus.check`, so ``/readyz``) means a publish
would be attempted now: the connection is up AND the publishing channel has been
reopened with its exchanges re-declared. aio-pika sets its connection's ``connected``
before it restores the channels, and a publish in between fails with aiormq's
``ChannelInvalidStateError`` (a ``RuntimeError``); so the channel's readiness is tracked
here from its own close and reopen callbacks. Every publish that fails because the
broker or the channel is away raises :class:`BusUnavailable` (a ``ConnectionError``),
whatever aio-pika raised; a broker's nack stays ``DeliveryError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import asyncpg
import structlog
from aio_pika.connection import make_url
from aiohttp import web
from pydantic import ValidationError

from billfold.events import Event, dump_event, parse_event
from billfold.logs import get_logger, plain_request_id, redact_text
from billfold.settings import Settings

DLX = "billfold.dlx"
REQUEST_ID_HEADER = "x-request-id"

Handler = Callable[[Event, asyncpg.Connection], Awaitable[None]]

log = get_logger("billfold.bus")

# Errors that say "the database is unreachable right now", not "this message is bad".
# They are retried in-process instead of nacked: a nack counts against the quorum
# delivery limit, and a Postgres restart must not send every in-flight event to the DLQ.
# OSError counts only while acquiring a connection: from inside a handler it may be its
# own dependency failing (SMTP, HTTP), which must go the nack / delivery-limit way.
_DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
_ACQUIRE_FAILED: tuple[type[BaseException], ...] = (OSError, TimeoutError, *_DB_UNAVAILABLE)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def sql_identifier(name: str) -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise ValueError.

    Schema names are interpolated into SQL (they cannot be bind parameters), so they
    are checked once here and never come from user input.
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _queue_arguments(name: str, delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": name,
        "x-delivery-limit": delivery_limit,
        # at-least-once dead-lettering needs reject-publish overflow; it guarantees a
        # message is in the DLQ before it leaves the source queue.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def _header_text(headers: aio_pika.abc.HeadersType, key: str) -> str | None:
    value = headers.get(key)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _delivery_count(message: aio_pika.abc.AbstractIncomingMessage) -> int:
    value = message.headers.get("x-delivery-count")
    return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class _Link:
    """What a connected bus holds: the robust connection, its confirm channel, the exchange."""

    connection: aio_pika.abc.AbstractRobustConnection
    channel: aio_pika.abc.AbstractRobustChannel
    exchange: aio_pika.abc.AbstractExchange


async def _open(
    settings: Settings, name: str, reconnect_interval: float, connect_timeout: float
) -> _Link:
    """Connect, open the confirm channel and declare the two exchanges; raise if unreachable."""
    # connect_robust() itself would leave a failed connection for the garbage
    # collector, whose __del__ schedules a close() that may never run: build it here
    # so a failed connect is closed properly (callers retry connecting).
    connection = aio_pika.RobustConnection(
        make_url(settings.amqp_url, reconnect_interval=reconnect_interval),
        client_properties={"connection_name": name},
        reconnect_interval=reconnect_interval,
    )
    try:
        await connection.connect(timeout=connect_timeout)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    except BaseException:
        await connection.close()
        raise
    return _Link(connection, channel, exchange)


class BusUnavailable(ConnectionError):
    """The broker or the publishing channel is away: nothing was (surely) published."""


# What aio-pika/aiormq raise when a publish meets a channel or connection that is gone
# (or not reopened yet); AMQPConnectionError is a ConnectionError already.
_CHANNEL_GONE: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPChannelError,
    aiormq.exceptions.AMQPConnectionError,
    ConnectionError,
)


def _error_text(exc: BaseException) -> str:
    # A connect error can quote the URL; logged only after redaction.
    return redact_text(f"{type(exc).__name__}: {exc}")[:300]


class Bus:
    """One robust AMQP connection per process; a confirm channel for publishing.

    Consumers get their own channel each (own prefetch, and a consumer's channel error
    cannot break publishing). Get one with :meth:`connect` (fail fast) or :meth:`start`
    (connect in the background while the broker is unreachable).
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        connection: aio_pika.abc.AbstractRobustConnection | None = None,
        channel: aio_pika.abc.AbstractRobustChannel | None = None,
        exchange: aio_pika.abc.AbstractExchange | None = None,
    ) -> None:
        """A bus over an open connection, or (all three None) one not connected yet."""
        self.settings = settings
        self.name = name
        self._link: _Link | None = None
        # The publishing channel is open with its exchanges declared (see module doc).
        self._channel_ready = False
        self._connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._consumer_channels: list[aio_pika.abc.AbstractChannel] = []
        self._closing = False
        if connection is not None or channel is not None or exchange is not None:
            if connection is None or channel is None or exchange is None:
                raise ValueError("give connection, channel and exchange, or none of them")
            self._attach(_Link(connection, channel, exchange))

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        name: str,
        reconnect_interval: float = 2.0,
        timeout: float = 10.0,  # noqa: ASYNC109 - passed to aio-pika's connect
    ) -> Bus:
        """Connect, open the confirm channel and declare the two exchanges.

        Raises if the broker is unreachable now; once connected, aio-pika reconnects
        by itself and re-declares what was declared (exchanges, queues, consumers).
        """
        bus = cls(settings, name)
        bus._attach(await _open(settings, name, reconnect_interval, timeout))
        return bus

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        name: str,
        reconnect_interval: float = 2.0,
        timeout: float = 5.0,  # noqa: ASYNC109 - each connect attempt's limit
        max_backoff: float = 10.0,
    ) -> Bus:
        """Connect if the broker answers now; otherwise keep trying in the background.

        Never raises for an unreachable broker. Makes one attempt (at most ``timeout``
        seconds), so with a healthy broker the bus is connected on return, as with
        :meth:`connect`. If that attempt fails, logs one warning (``bus_connect_failed``)
        and retries with jittered exponential backoff (0.5 s doubling, capped at
        ``max_backoff``) until it connects (one info line, ``bus_connected``) or
        :meth:`close`. Meanwhile the broker-facing methods raise ``ConnectionError``.
        A first attempt that succeeds logs nothing, as :meth:`connect`.
        """
        bus = cls(settings, name)
        try:
            bus._attach(await _open(settings, name, reconnect_interval, timeout))
        except Exception as exc:
            log.warning(
                "bus_connect_failed", bus=name, error=_error_text(exc), retrying="background"
            )
            task = asyncio.create_task(
                bus._keep_connecting(reconnect_interval, timeout, max_backoff),
                name=f"bus-connect-{name}",
            )
            task.add_done_callback(bus._on_connect_task_done)
            bus._connect_task = task
        return bus

    async def _keep_connecting(
        self,
        reconnect_interval: float,
        connect_timeout: float,
        max_backoff: float,
    ) -> None:
        """The background half of :meth:`start`: retry until connected (or cancelled)."""
        since = time.monotonic()
        attempts = 1
        while True:
            delay = min(max_backoff, 0.5 * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
            await asyncio.sleep(delay)
            attempts += 1
            try:
                link = await _open(self.settings, self.name, reconnect_interval, connect_timeout)
            except Exception as exc:  # still down: the warning was logged once already
                log.debug("bus_connect_retry_failed", bus=self.name, error=_error_text(exc))
                continue
            self._attach(link)
            log.info(
                "bus_connected",
                bus=self.name,
                attempts=attempts,
                unavailable_for_s=round(time.monotonic() - since, 1),
            )
            return

    def _on_connect_task_done(self, task: asyncio.Task[None]) -> None:
        # _keep_connecting handles every connect failure; anything escaping is a bug that
        # would leave the bus unconnected until a restart: say so loudly.
        if not task.cancelled() and task.exception() is not None:
            log.error("bus_connect_crashed", bus=self.name, exc_info=task.exception())

    def _attach(self, link: _Link) -> None:
        self._link = link
        # _open returned: the channel is open and the exchanges are declared. From now on
        # a connection or channel loss clears the flag, and only the channel's reopen
        # (which aio-pika runs after re-declaring the exchanges) sets it again.
        self._channel_ready = True
        link.connection.close_callbacks.add(self._on_channel_lost)
        link.channel.close_callbacks.add(self._on_channel_lost)
        link.channel.reopen_callbacks.add(self._on_channel_restored)
        self._connected.set()

    def _on_channel_lost(self, *_: object) -> None:
        self._channel_ready = False

    def _on_channel_restored(self, *_: object) -> None:
        self._channel_ready = True

    def _require(self) -> _Link:
        """The open link, or ``ConnectionError`` at once (never waits for the broker)."""
        if self._closing:
            raise BusUnavailable(f"amqp bus {self.name!r} is closed")
        if self._link is None:
            raise BusUnavailable(
                f"amqp bus {self.name!r} is not connected yet (broker unreachable); "
                "retrying in the background"
            )
        return self._link

    @property
    def connected(self) -> bool:
        """True when a publish would be attempted now: the connection is up and the
        publishing channel is open with its exchanges restored (False before the first
        connect, while reconnecting or restoring the channel, and after :meth:`close`)."""
        link = self._link
        return (
            not self._closing
            and link is not None
            and self._channel_ready
            and not link.connection.is_closed
            and link.connection.connected.is_set()
            and not link.channel.is_closed
        )

    def _state(self) -> str:
        if self._closing:
            return "closed"
        if self._link is None:
            return "not connected yet"
        link = self._link
        if link.connection.is_closed or not link.connection.connected.is_set():
            return "down"
        return "restoring its channel"

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the first connect succeeded (at once if it has); ``TimeoutError``
        after ``timeout`` seconds. For a consumer that must declare its queues first."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    # --- publishing ------------------------------------------------------------------

    async def publish(
        self,
        event: Event,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - the confirm wait
    ) -> None:
        """Publish one event and wait for the broker's confirm (raises if refused)."""
        headers: dict[str, str] = {}
        if event.request_id:
            headers[REQUEST_ID_HEADER] = event.request_id
        await self.publish_raw(
            event.routing_key,
            dump_event(event),
            message_id=event.id,
            headers=headers,
            timeout=timeout,
        )

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: dict[str, str],
        timeout: float = 10,  # noqa: ASYNC109 - aio-pika's confirm wait, per message
    ) -> None:
        """Publish already-serialised event JSON; returns once the broker confirmed it.

        Raises ``aio_pika.exceptions.DeliveryError`` on a nack, :class:`BusUnavailable`
        (a ``ConnectionError``) whenever the broker or the channel is away (at once if
        the bus is not :attr:`connected`), or ``TimeoutError`` if the confirm is late
        while the connection stays up. Safe to call concurrently: many confirms in
        flight on one channel is what makes the outbox relay fast.
        """
        exchange = self._require().exchange
        if not self.connected:
            raise BusUnavailable(f"amqp bus {self.name!r} is {self._state()}")
        message = aio_pika.Message(
            body,
            message_id=message_id,
            type=routing_key,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers),
        )
        # Not mandatory: an event nobody has bound a queue for yet is simply not wanted
        # (topic semantics); consumers declare their durable queues at start-up.
        try:
            await exchange.publish(message, routing_key, mandatory=False, timeout=timeout)
        except aiormq.exceptions.DeliveryError:
            raise  # the broker answered (a nack): not an outage
        except Exception as exc:
            # The channel or connection went away mid-publish (or was found gone): one
            # exception type for callers, whatever aio-pika raised. Anything else that
            # happened while the link is down counts as the outage too.
            if isinstance(exc, _CHANNEL_GONE) or not self.connected:
                raise BusUnavailable(
                    f"amqp bus {self.name!r}: publish failed, {type(exc).__name__}: {exc}"
                ) from exc
            raise

    # --- queues and consuming ---------------------------------------------------------

    async def declare_queue(
        self,
        name: str,
        routing_keys: list[str],
        *,
        channel: aio_pika.abc.AbstractChannel | None = None,
    ) -> aio_pika.abc.AbstractQueue:
        """Declare the durable quorum queue ``name`` (bound to ``routing_keys``) and its DLQ."""
        chan = channel or self._require().channel
        dlq = await chan.declare_queue(
            f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(DLX, routing_key=name)
        queue = await chan.declare_queue(
            name,
            durable=True,
            arguments=_queue_arguments(name, self.settings.delivery_limit),
        )
        for key in routing_keys:
            await queue.bind(self.settings.exchange, routing_key=key)
        return queue

    async def delete_queue(self, name: str) -> None:
        """Delete ``name`` and its ``.dlq`` (tests, decommissioning a consumer)."""
        channel = self._require().channel
        for queue in (name, f"{name}.dlq"):
            await channel.queue_delete(queue)

    async def consume(
        self,
        queue_name: str,
        routing_keys: list[str],
        handler: Handler,
        *,
        pool: asyncpg.Pool,
        schema: str,
        consumer: str,
        prefetch: int = 32,
        retry_delay: float = 0.5,
    ) -> None:
        """Start consuming ``queue_name``; returns once the consumer is registered.

        Each message runs ``handler(event, conn)`` inside one transaction that also
        inserts ``(consumer, event_id)`` into ``{schema}.processed_events``; a duplicate
        skips the handler. The ack follows the commit. A failing handler rolls back and
        the message is requeued after ``retry_delay * 2**deliveries`` (capped at 10 s)
        so a poison message reaches the delivery limit and the DLQ without spinning.

        Raises ``ConnectionError`` if the bus has not connected yet: a consuming service
        uses :meth:`connect`, or awaits :meth:`wait_connected` first.
        """
        channel = await self._require().connection.channel()
        self._consumer_channels.append(channel)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await self.declare_queue(queue_name, routing_keys, channel=channel)
        worker = _Consumer(
            pool=pool,
            schema=schema,
            consumer=consumer,
            handler=handler,
            queue_name=queue_name,
            retry_delay=retry_delay,
            is_closing=lambda: self._closing,
        )
        await queue.consume(worker.on_message, no_ack=False)
        log.info("bus_consuming", queue=queue_name, consumer=consumer, prefetch=prefetch)

    async def open_channel(
        self, *, publisher_confirms: bool = False, on_return_raises: bool = False
    ) -> aio_pika.abc.AbstractRobustChannel:
        """A new robust channel on the bus's connection, closed by :meth:`close`.

        For users that need a channel of their own (``billfold.rpc``: direct reply-to
        works only on the channel that consumes it). ``ConnectionError`` at once if the
        bus has not connected yet.
        """
        channel = await self._require().connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=on_return_raises
        )
        self._consumer_channels.append(channel)
        return channel

    # --- lifecycle ----------------------------------------------------------------------

    async def check(self) -> None:
        """Readiness: raise ``ConnectionError`` unless :attr:`connected` (a publish would
        be attempted now)."""
        if not self.connected:
            # A plain ConnectionError: /readyz reports the type's name, kept stable.
            raise ConnectionError(f"amqp connection is {self._state()}")

    async def close(self) -> None:
        """Stop connecting, close consumers (their unacked messages go back to the
        queue), then the connection. Idempotent."""
        if self._closing:
            return
        self._closing = True
        task, self._connect_task = self._connect_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self._consumer_channels:
            if not channel.is_closed:
                await channel.close()
        if self._link is not None:
            await self._link.connection.close()


class _DatabaseUnavailable(Exception):
    pass


class _Consumer:
    """Per-queue message processing: parse, dedupe, handle, commit, then ack."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        schema: str,
        consumer: str,
        handler: Handler,
        queue_name: str,
        retry_delay: float,
        is_closing: Callable[[], bool],
    ) -> None:
        self.pool = pool
        self.handler = handler
        self.consumer = consumer
        self.queue_name = queue_name
        self.retry_delay = retry_delay
        self.is_closing = is_closing
        self.db_down = False
        table = f"{sql_identifier(schema)}.processed_events"
        self.dedupe_sql = (
            f"INSERT INTO {table} (consumer, event_id) VALUES ($1, $2) "  # noqa: S608 - checked
            "ON CONFLICT DO NOTHING"
        )

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        # As for X-Request-Id: only a short plain id is used (and logs redact it anyway).
        request_id = plain_request_id(_header_text(message.headers, REQUEST_ID_HEADER))
        # Each delivery runs in its own task, so binding here cannot leak into others.
        structlog.contextvars.clear_contextvars()
        if request_id:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            event = parse_event(message.body)
        except (ValidationError, ValueError) as exc:
            log.error(
                "message_unparseable",
                queue=self.queue_name,
                message_id=message.message_id,
                error=type(exc).__name__,
            )
            await self._settle(message.reject(requeue=False))
            return
        structlog.contextvars.bind_contextvars(event_id=event.id, event_type=event.type)
        if not request_id and plain_request_id(event.request_id):
            structlog.contextvars.bind_contextvars(request_id=event.request_id)
        try:
            handled = await self._apply(event)
        except Exception:
            log.exception(
                "message_handler_failed",
                queue=self.queue_name,
                deliveries=_delivery_count(message),
            )
            await asyncio.sleep(min(10.0, self.retry_delay * 2 ** _delivery_count(message)))
            await self._settle(message.nack(requeue=True))
            return
        if handled is None:
            return  # shutting down; the unacked message is redelivered to someone else
        if not handled:
            log.info("message_duplicate_skipped", queue=self.queue_name)
        await self._settle(message.ack())

    async def _apply(self, event: Event) -> bool | None:
        """Run the handler once per event id; retry while the database is unreachable.

        Returns True if handled, False for a duplicate, None if closing mid-outage.
        """
        attempt = 0
        while True:
            try:
                handled = await self._apply_once(event)
            except _DatabaseUnavailable as exc:
                if self.is_closing():
                    return None
                if not self.db_down:  # one line per outage, not per in-flight message
                    log.warning("consumer_db_unavailable", error=type(exc.__cause__).__name__)
                    self.db_down = True
                attempt += 1
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))
                continue
            if self.db_down:
                self.db_down = False
                log.info("consumer_db_recovered", queue=self.queue_name)
            return handled

    async def _apply_once(self, event: Event) -> bool:
        try:
            conn = await self.pool.acquire()
        except _ACQUIRE_FAILED as exc:
            raise _DatabaseUnavailable from exc
        try:
            async with conn.transaction():
                status = await conn.execute(self.dedupe_sql, self.consumer, event.id)
                if status.endswith(" 0"):
                    return False
                await self.handler(event, cast(asyncpg.Connection, conn))
                return True
        except _DB_UNAVAILABLE as exc:
            raise _DatabaseUnavailable from exc
        finally:
            await self.pool.release(conn)

    async def _settle(self, action: Awaitable[None]) -> None:
        # If the channel died meanwhile the broker requeues the message by itself; the
        # dedupe row makes that redelivery harmless.
        try:
            await action
        except Exception as exc:  # logged; the broker redelivers
            log.warning("message_settle_failed", queue=self.queue_name, error=type(exc).__name__)


BUS: web.AppKey[Bus] = web.AppKey("bus", Bus)


def bus_context(
    settings: Settings, *, name: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry: start the bus with the app, close it after.

    A broker outage does not stop the app from starting (see :meth:`Bus.start`):
    ``app[BUS]`` is set at once and connects in the background; entries after this one
    (the outbox relay) can share it from the start.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = await Bus.start(settings, name=name)
        app[BUS] = bus
        try:
            yield
        finally:
            await bus.close()

    return ctx
