"""The notifier's aiohttp application: health and metrics on its port, the bus
consumer that turns events into deliveries, and the dispatcher that sends them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from billfold import bus, db
from billfold.http import malformed
from billfold.http.health import add_health_routes
from billfold.http.middlewares import standard_middlewares
from billfold.logs import get_logger
from notifier import consumer, deliveries
from notifier.dispatcher import Sender, dispatcher_context
from notifier.email.sender import EmailSender
from notifier.settings import NotifierSettings
from notifier.webhooks.sender import WebhookSender

SERVICE = "notifier"
SWEEP_EVERY = 600.0

log = get_logger("notifier.app")

SETTINGS: web.AppKey[NotifierSettings] = web.AppKey("settings", NotifierSettings)
# Set once the consumer is registered (tests and readiness wait on it).
CONSUMING: web.AppKey[asyncio.Event] = web.AppKey("consuming", asyncio.Event)
EMAIL_SENDER: web.AppKey[EmailSender] = web.AppKey("email_sender", EmailSender)
WEBHOOK_SENDER: web.AppKey[WebhookSender] = web.AppKey("webhook_sender", WebhookSender)


async def _check_postgres(app: web.Application) -> None:
    await db.check(app[db.DB_POOL])


async def _check_rabbitmq(app: web.Application) -> None:
    await app[bus.BUS].check()


def _consumer_context() -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[CONSUMING] = asyncio.Event()

        async def start() -> None:
            # The bus connects in the background while RabbitMQ is down; queued
            # deliveries are still sent meanwhile.
            the_bus = app[bus.BUS]
            await the_bus.wait_connected()
            await the_bus.consume(
                consumer.QUEUE,
                consumer.ROUTING_KEYS,
                consumer.handle,
                pool=app[db.DB_POOL],
                schema="notify",
                consumer=consumer.CONSUMER,
                prefetch=64,
            )
            app[CONSUMING].set()

        task = asyncio.create_task(start(), name="notifier-consumer-start")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task

    return ctx


async def _senders_context(app: web.Application) -> AsyncIterator[None]:
    email = EmailSender(app[db.DB_POOL], app[SETTINGS])
    webhook = WebhookSender(app[db.DB_POOL], app[SETTINGS])
    app[EMAIL_SENDER] = email
    app[WEBHOOK_SENDER] = webhook
    yield
    await email.close()
    await webhook.close()


async def _retention_sweeper(app: web.Application) -> AsyncIterator[None]:
    """Delete sent deliveries past the retention period, every few minutes."""
    settings = app[SETTINGS]

    async def loop() -> None:
        while True:
            try:
                deleted = await deliveries.sweep(app[db.DB_POOL], settings.delivery_retention_days)
                if deleted:
                    log.info("deliveries_swept", deleted=deleted)
            except Exception as exc:  # the next round retries
                log.warning("deliveries_sweep_failed", error=type(exc).__name__)
            await asyncio.sleep(SWEEP_EVERY)

    task = asyncio.create_task(loop(), name="notifier-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _senders(app: web.Application) -> dict[str, Sender]:
    return {"email": app[EMAIL_SENDER], "webhook": app[WEBHOOK_SENDER]}


def create_app(settings: NotifierSettings) -> web.Application:
    app = web.Application(
        middlewares=standard_middlewares(
            SERVICE, settings.max_body_bytes, settings.trusted_proxy_networks
        ),
        client_max_size=settings.max_body_bytes,
    )
    malformed.install(app)
    app[SETTINGS] = settings
    app.cleanup_ctx.extend(
        [
            db.pool_context(settings),
            bus.bus_context(settings, name=SERVICE),
            _senders_context,
            # Before the consumer: stops after it, so deliveries it scheduled get sent.
            dispatcher_context(settings, _senders),
            _consumer_context(),
            _retention_sweeper,
        ]
    )
    # Postgres holds the deliveries: without it nothing can be sent or recorded.
    # RabbitMQ only brings new events; scheduled deliveries still go out without it.
    add_health_routes(
        app, required={"postgres": _check_postgres}, optional={"rabbitmq": _check_rabbitmq}
    )
    return app
