"""The dispatcher: sends due deliveries, records the outcome, schedules retries.

It claims due rows of ``notify.deliveries`` (``FOR UPDATE SKIP LOCKED`` plus a lease,
so replicas share the work and no transaction stays open during a send), runs up to
``dispatch_concurrency`` sends at once, and wakes on ``pg_notify`` from the consumer,
on a finished send, or when the earliest scheduled retry is due. A transient failure
is retried after the next delay of the channel's schedule; a permanent one, or a
transient one past the schedule, marks the delivery dead (the dead-letter store that
``billfold dlq`` lists and replays).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from billfold.db import DB_POOL
from billfold.logs import get_logger
from notifier import deliveries, metrics
from notifier.deliveries import Delivery
from notifier.failures import DeliveryFailed, transient
from notifier.settings import NotifierSettings

Sender = Callable[[Delivery], Awaitable[None]]

log = get_logger("notifier.dispatcher")


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: NotifierSettings,
        senders: dict[str, Sender],
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.senders = senders
        self.delays = {
            "email": settings.email_retry_delays,
            "webhook": settings.webhook_retry_delays,
        }
        self._inflight: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._failing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier-dispatcher")

    async def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # In-flight sends finish (bounded by the SMTP/HTTP timeouts) so none is cut
        # between "accepted" and "recorded".
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.settings.webhook_timeout + 5)
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            with contextlib.suppress(Exception):
                await self._listen_conn.close(timeout=2)

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._ensure_listening()
            self._wakeup.clear()
            free = self.settings.dispatch_concurrency - len(self._inflight)
            claimed: list[Delivery] = []
            if free > 0:
                try:
                    claimed = await deliveries.claim(self.pool, free, self.settings.dispatch_lease)
                except Exception as exc:  # database unreachable: wait and try again
                    if not self._failing:
                        log.warning("dispatch_claim_failed", error=type(exc).__name__)
                        self._failing = True
                    await self._sleep(1.0)
                    continue
                self._failing = False
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if free > 0 and len(claimed) == free:
                continue  # more may be due
            await self._wait_for_work()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wakeup.set()

    async def _wait_for_work(self) -> None:
        timeout = self.settings.dispatch_poll
        if len(self._inflight) < self.settings.dispatch_concurrency:
            with contextlib.suppress(Exception):
                due = await deliveries.next_due_in(self.pool)
                if due is not None:
                    timeout = min(timeout, max(0.005, due))
        await self._sleep(timeout)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _ensure_listening(self) -> None:
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        try:
            conn = await asyncpg.connect(self.settings.database_url, timeout=5)
            await conn.add_listener(deliveries.CHANNEL, self._on_notify)
        except Exception as exc:  # the poll covers for it meanwhile
            log.warning("dispatch_listen_failed", error=type(exc).__name__)
            return
        conn.add_termination_listener(self._on_notify)
        self._listen_conn = conn

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    # --- one delivery ---------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery) -> None:
        sender = self.senders.get(delivery.channel)
        try:
            if sender is None:
                raise transient(f"no sender for channel {delivery.channel}")
            await sender(delivery)
        except DeliveryFailed as failure:
            await self._failed(delivery, failure)
            return
        except Exception as exc:  # a bug or an unexpected dependency error: retry, logged
            log.exception("delivery_error", delivery_id=delivery.id)
            await self._failed(delivery, transient(f"error: {type(exc).__name__}"))
            return
        try:
            await deliveries.mark_sent(self.pool, delivery.id)
        except Exception as exc:
            # The lease runs out and the delivery is sent again: at-least-once; the
            # stable Message-ID / delivery id lets the receiver see the duplicate.
            log.warning("delivery_record_failed", delivery_id=delivery.id, error=type(exc).__name__)
            return
        metrics.DELIVERIES.labels(delivery.channel, "sent").inc()
        occurred = delivery.payload.get("occurred_at")
        if isinstance(occurred, str):
            with contextlib.suppress(ValueError):
                age = datetime.now(UTC) - datetime.fromisoformat(occurred)
                metrics.EVENT_TO_SENT.labels(delivery.channel).observe(age.total_seconds())
        log.info(
            "delivery_sent",
            delivery_id=delivery.id,
            channel=delivery.channel,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            site=delivery.site_id,
            attempts=delivery.attempts,
        )

    async def _failed(self, delivery: Delivery, failure: DeliveryFailed) -> None:
        delays = self.delays.get(delivery.channel, ())
        fields = {
            "delivery_id": delivery.id,
            "channel": delivery.channel,
            "event_id": delivery.event_id,
            "site": delivery.site_id,
            "attempts": delivery.attempts,
            "reason": failure.reason,
        }
        try:
            if failure.permanent or delivery.attempts > len(delays):
                await deliveries.mark_dead(self.pool, delivery.id, failure.reason)
                metrics.DELIVERIES.labels(delivery.channel, "dead").inc()
                log.warning("delivery_dead", permanent=failure.permanent, **fields)
            else:
                delay = delays[delivery.attempts - 1]
                await deliveries.retry_later(self.pool, delivery.id, delay, failure.reason)
                metrics.DELIVERIES.labels(delivery.channel, "retry").inc()
                log.info("delivery_retry_scheduled", delay=delay, **fields)
        except Exception as exc:  # the lease expires and the attempt is simply repeated
            log.warning("delivery_record_failed", delivery_id=delivery.id, error=type(exc).__name__)


DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher", Dispatcher)


def dispatcher_context(
    settings: NotifierSettings, senders: Callable[[web.Application], dict[str, Sender]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        dispatcher = Dispatcher(app[DB_POOL], settings, senders(app))
        app[DISPATCHER] = dispatcher
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()

    return ctx
